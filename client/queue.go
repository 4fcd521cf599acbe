package client

import (
	"sync"

	"github.com/sessiond/sessiond/protocol"
)

const (
	// noticeBuffer is the capacity of a Notices channel; beyond it notices wait in the queue.
	noticeBuffer = 64
	// maxQueued bounds the queue behind it. Only notices that can repeat without end (errors
	// without an id) are dropped at the bound; a session's notices cannot exceed it.
	maxQueued = 4096
)

// queue delivers notices (or events) in order on out and never drops the ones that end a
// session: when the reader falls behind, they wait in an in-memory queue, where a newer
// notice.sessions_changed replaces an older one still waiting (each carries the whole device
// list, so only the newest matters).
type queue[T any] struct {
	kind   func(T) string
	mu     sync.Mutex
	items  []T
	closed bool
	wake   chan struct{}
	out    chan T
}

// noticeQueue is a Conn's queue of server messages.
type noticeQueue = queue[Message]

func newNoticeQueue() *noticeQueue {
	return newQueue(func(m Message) string { return m.Type })
}

func newQueue[T any](kind func(T) string) *queue[T] {
	q := &queue[T]{kind: kind, wake: make(chan struct{}, 1), out: make(chan T, noticeBuffer)}
	go q.pump()
	return q
}

// critical notices and events end the session: they are never dropped.
func critical(typ string) bool {
	return typ == protocol.NoticeRevoked || typ == protocol.NoticeExpired || typ == EventEnded
}

func (q *queue[T]) push(m T) {
	q.mu.Lock()
	if q.kind(m) == protocol.NoticeSessionsChanged {
		for i, old := range q.items {
			if q.kind(old) == protocol.NoticeSessionsChanged {
				q.items = append(q.items[:i], q.items[i+1:]...)
				break // at most one is ever waiting
			}
		}
	}
	if len(q.items) < maxQueued || critical(q.kind(m)) {
		q.items = append(q.items, m)
	}
	q.mu.Unlock()
	q.signal()
}

// close ends the queue: out is closed once every waiting notice has been delivered.
func (q *queue[T]) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	q.signal()
}

func (q *queue[T]) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *queue[T]) pump() {
	for {
		q.mu.Lock()
		if len(q.items) == 0 {
			closed := q.closed
			q.mu.Unlock()
			if closed {
				close(q.out)
				return
			}
			<-q.wake
			continue
		}
		m := q.items[0]
		q.items = q.items[1:]
		q.mu.Unlock()
		q.out <- m
	}
}
