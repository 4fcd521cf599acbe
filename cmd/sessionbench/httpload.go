package main

import (
	"context"
	"io"
	"net/http"
	"sync"
	"time"
)

// maxSamplesPerPhase bounds the latencies one load phase keeps (and so the requests it sends).
const maxSamplesPerPhase = 20_000_000

// loadClient is the HTTP client of the load phases: keep-alive, and as many idle connections
// per host as there are workers, so every worker keeps its own connection.
func loadClient(concurrency int) *http.Client {
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			MaxIdleConns:        4 * concurrency,
			MaxIdleConnsPerHost: 4 * concurrency,
			IdleConnTimeout:     2 * time.Minute,
			DisableCompression:  true,
		},
	}
}

// loadResult is what one load phase measured.
type loadResult struct {
	lat     latencies
	errors  int
	elapsed time.Duration
}

func (r loadResult) rps() float64 { return float64(len(r.lat)) / r.elapsed.Seconds() }

func (r *loadResult) add(o loadResult) {
	r.lat = append(r.lat, o.lat...)
	r.errors += o.errors
	r.elapsed += o.elapsed
}

// httpLoad sends requests for d (or until maxSamplesPerPhase) from len(reqs) workers; worker w
// cycles through reqs[w], re-using each request once its response is read (keep-alive).
// A response other than 200 counts as an error.
func httpLoad(ctx context.Context, hc *http.Client, reqs [][]*http.Request, d time.Duration) loadResult {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	perWorker := maxSamplesPerPhase / len(reqs)
	var mu sync.Mutex
	var res loadResult
	var wg sync.WaitGroup
	start := time.Now()
	for w := range reqs {
		wg.Add(1)
		go func(mine []*http.Request) {
			defer wg.Done()
			local := make(latencies, 0, 1<<16)
			errs := 0
			for i := 0; ctx.Err() == nil && len(local) < perWorker; i++ {
				req := mine[i%len(mine)]
				if req.GetBody != nil { // a request with a body is sent again: rewind it
					req.Body, _ = req.GetBody()
				}
				t := time.Now()
				resp, err := hc.Do(req)
				if err != nil {
					if ctx.Err() == nil {
						errs++
					}
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				local = append(local, time.Since(t))
				if resp.StatusCode != http.StatusOK {
					errs++
				}
			}
			mu.Lock()
			res.lat = append(res.lat, local...)
			res.errors += errs
			mu.Unlock()
		}(reqs[w])
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	return res
}

// spread builds the workers' requests: worker w gets the requests made by mk(i) for the i
// with i % workers == w (at least one).
func spread(workers, n int, mk func(i int) *http.Request) [][]*http.Request {
	out := make([][]*http.Request, workers)
	for w := range out {
		for i := w; i < max(n, workers); i += workers {
			out[w] = append(out[w], mk(i%max(n, 1)))
		}
	}
	return out
}
