package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/sessiond/sessiond/session"
)

// Key rotation on the command line (see docs for the procedure):
//
//	sessiond keygen -rotate [-stage] -i CURRENT.json -o NEW.json
//	sessiond keygen -retire ID -i IN.json -o OUT.json
//	sessiond admin rotate-keys [-key-file F] [-data-dir D | -database-url URL]
//
// rotate-keys works on the store directly, not through a node: it needs the database and the
// key file only.

const keygenRotateUsage = `usage: sessiond keygen -rotate [-stage] -i CURRENT.json -o NEW.json
       sessiond keygen -retire ID -i IN.json -o OUT.json

-rotate          make a fresh token key and a fresh seal key current (or the staged ones,
                 when CURRENT.json has some), keeping every older key
-rotate -stage   add a fresh token key and seal key without making them current yet: roll
                 every node onto NEW.json first, then -rotate it (a rotation without a moment
                 where some node cannot read what another wrote)
-retire ID       remove an older token or seal key

The OPAQUE key material, the fake-record key and the log key never change: every registration
record depends on the OPAQUE material.
`

const rotateKeysUsage = `usage: sessiond admin rotate-keys [-key-file F] [-data-dir D | -database-url URL]

Re-seals every sealed value of the store under the key file's current seal key, records the key
file's fingerprint as the deployment's (nodes started with another key file are then refused),
and says when the older keys can be retired. Safe while nodes run, provided every node can
already open values sealed under the new key (see keygen -rotate -stage). Works on the store
directly: it needs the database and the key file, not a running node.
`

// hasFlag reports whether args holds one of the flags names (-name, --name, -name=value).
func hasFlag(args []string, names ...string) bool {
	for _, a := range args {
		if a == "--" {
			return false
		}
		if !strings.HasPrefix(a, "-") {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-"), "=")
		if slices.Contains(names, name) {
			return true
		}
	}
	return false
}

func keygenRotate(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sessiond keygen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, keygenRotateUsage) }
	in := fs.String("i", "", "the key file to start from")
	out := fs.String("o", "", "the key file to write (mode 0600; an existing file is never replaced)")
	rotate := fs.Bool("rotate", false, "make new token and seal keys current")
	stage := fs.Bool("stage", false, "with -rotate: add new keys without making them current")
	retire := fs.String("retire", "", "remove this older token or seal key")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	if fs.NArg() > 0 || *rotate == (*retire != "") || (*stage && !*rotate) || *in == "" || *out == "" {
		fs.Usage()
		return errUsage
	}
	if filepath.Clean(*in) == filepath.Clean(*out) {
		return errors.New("keygen: -o must name a new file, not the input (keep the current key file until every node runs the new one)")
	}
	k, err := session.LoadKeys(*in)
	if err != nil {
		return fmt.Errorf("keygen: key file %s: %w", *in, err)
	}
	var nk *session.Keys
	switch {
	case *stage:
		nk, err = k.Stage()
	case *rotate:
		nk = k.Successor()
	default:
		nk, err = k.Retire(*retire)
	}
	if err != nil {
		return fmt.Errorf("keygen: %w", err)
	}
	if err := session.WriteKeys(*out, nk); err != nil {
		return fmt.Errorf("keygen: %w", err)
	}
	switch {
	case *stage:
		fmt.Fprintf(stdout, "wrote %s: staged token key %s and seal key %s; %s and %s stay current, and so does the key fingerprint.\n",
			*out, nk.NextTokenKey, nk.NextSealKey, nk.CurrentTokenKey, nk.CurrentSealKey)
		fmt.Fprintf(stdout, "next: restart every node with %s, then make the staged keys current: sessiond keygen -rotate -i %s -o NEW.json\n", *out, *out)
	case *rotate:
		fmt.Fprintf(stdout, "wrote %s: token key %s and seal key %s are current; kept %s.\n",
			*out, nk.CurrentTokenKey, nk.CurrentSealKey, strings.Join(olderKeys(nk), ", "))
		fmt.Fprintf(stdout, "key fingerprint %s (was %s): nodes are refused with it until you run\n  sessiond admin rotate-keys -key-file %s\n",
			nk.Fingerprint(), k.Fingerprint(), *out)
	default:
		fmt.Fprintf(stdout, "wrote %s: key %s retired; the key fingerprint is unchanged.\n", *out, *retire)
	}
	return nil
}

// olderKeys lists the token and seal keys that are neither current nor staged.
func olderKeys(k *session.Keys) []string {
	var ids []string
	for _, id := range slices.Sorted(maps.Keys(k.TokenKeys)) {
		if id != k.CurrentTokenKey && id != k.NextTokenKey {
			ids = append(ids, id)
		}
	}
	for _, id := range slices.Sorted(maps.Keys(k.SealKeys)) {
		if id != k.CurrentSealKey && id != k.NextSealKey {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return []string{"none"}
	}
	return ids
}

// rewrapPasses bounds how often rotate-keys goes over the store again for values that nodes
// wrote while it was re-sealing them.
const rewrapPasses = 3

// rotateOpts are the flags of rotate-keys.
type rotateOpts struct {
	dataDir, dbURL, keyFile string
	force                   bool
	absolute                time.Duration
}

func parseRotateFlags(args []string, getenv func(string) string, stderr io.Writer) (rotateOpts, error) {
	fs := flag.NewFlagSet("sessiond admin rotate-keys", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, rotateKeysUsage+"\nflags:\n")
		fs.PrintDefaults()
	}
	env := func(name, def string) string {
		if v := getenv(name); v != "" {
			return v
		}
		return def
	}
	o := rotateOpts{absolute: 12 * time.Hour}
	fs.StringVar(&o.dataDir, "data-dir", env("SESSIOND_DATA_DIR", "data"), "directory of the embedded store ($SESSIOND_DATA_DIR)")
	fs.StringVar(&o.dbURL, "database-url", getenv("SESSIOND_DATABASE_URL"), "PostgreSQL URL, instead of the embedded store ($SESSIOND_DATABASE_URL)")
	fs.StringVar(&o.keyFile, "key-file", getenv("SESSIOND_KEY_FILE"), "the new key file ($SESSIOND_KEY_FILE; default DATA_DIR/keys.json)")
	fs.BoolVar(&o.force, "force", false, "record the key fingerprint even when some sealed values cannot be opened")
	if v := getenv("SESSIOND_ABSOLUTE_TIMEOUT"); v != "" {
		if err := durationSetter(&o.absolute)(v); err != nil {
			return o, fmt.Errorf("invalid SESSIOND_ABSOLUTE_TIMEOUT: %w", err)
		}
	}
	fs.Func("absolute-timeout", "the deployment's session lifetime ($SESSIOND_ABSOLUTE_TIMEOUT, default 12h)", durationSetter(&o.absolute))
	if err := fs.Parse(args); err != nil {
		return o, errUsage
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return o, errUsage
	}
	if o.keyFile == "" {
		o.keyFile = filepath.Join(o.dataDir, "keys.json")
	}
	return o, nil
}

func rotateKeys(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	o, err := parseRotateFlags(args, getenv, stderr)
	if err != nil {
		return err
	}
	keys, err := session.LoadKeys(o.keyFile)
	if err != nil {
		return fmt.Errorf("rotate-keys: key file %s: %w", o.keyFile, err)
	}
	if keys.NextTokenKey != "" || keys.NextSealKey != "" {
		return fmt.Errorf("rotate-keys: %s has staged keys; once every node runs with it, make them current (sessiond keygen -rotate -i %s -o NEW.json) and run rotate-keys with that file", o.keyFile, o.keyFile)
	}
	if o.dbURL == "" {
		// Opening would create an empty store, which there is no point rotating.
		path := filepath.Join(o.dataDir, "sessiond.db")
		if _, err := os.Stat(path); err != nil {
			return fmt.Errorf("rotate-keys: no embedded store at %s (give -data-dir, or -database-url): %w", path, err)
		}
	}
	st, err := openStore(ctx, &config{DataDir: o.dataDir, DatabaseURL: o.dbURL})
	if err != nil {
		return fmt.Errorf("rotate-keys: %w", err)
	}
	defer st.close()

	now := time.Now().UTC()
	first, last, resealed, err := rewrapAll(ctx, st, keys)
	if err != nil {
		return err
	}
	unreadable, changed := reportRewrap(stdout, keys, first, last, resealed)
	if n := sum(unreadable); n > 0 {
		fmt.Fprintf(stdout, "%d sealed values cannot be opened with %s (by the key that sealed them: %v).\n", n, o.keyFile, unreadable)
		if !o.force {
			return fmt.Errorf("rotate-keys: is %s this deployment's key file? The recorded key fingerprint was not changed (use -force to record it anyway)", o.keyFile)
		}
	}
	if err := st.SetKeyFingerprint(ctx, keys.Fingerprint()); err != nil {
		return fmt.Errorf("rotate-keys: %w", err)
	}
	fmt.Fprintf(stdout, "recorded key fingerprint %s: from now on nodes start only with this key file (or one with the same current keys).\n", keys.Fingerprint())
	reportRetirement(stdout, keys, unreadable, changed, now.Add(o.absolute).Truncate(time.Second), o.absolute)
	return nil
}

// rewrapAll re-seals every sealed value under the current seal key, going over the store again
// (up to rewrapPasses) for values nodes wrote meanwhile. It returns the first and last pass's
// counts and how many values were re-sealed in all.
func rewrapAll(ctx context.Context, st session.KeyStore, keys *session.Keys) (first, last map[string]session.RewrapCount, resealed map[string]int, err error) {
	resealed = map[string]int{}
	for pass := 1; pass <= rewrapPasses; pass++ {
		last, err = session.Rewrap(ctx, st, keys, zerolog.Nop())
		if err != nil {
			return nil, nil, nil, fmt.Errorf("rotate-keys: %w (what was re-sealed so far stays so; run it again)", err)
		}
		if first == nil {
			first = last
		}
		changed := 0
		for table, c := range last {
			resealed[table] += c.Resealed
			changed += c.Changed
		}
		if changed == 0 {
			break
		}
	}
	return first, last, resealed, nil
}

// reportRewrap prints what the re-sealing did, table by table, and returns the values that did
// not open (by key id) and how many were still being written.
func reportRewrap(stdout io.Writer, keys *session.Keys, first, last map[string]session.RewrapCount, resealed map[string]int) (map[string]int, int) {
	fmt.Fprintf(stdout, "re-sealed under seal key %s:\n", keys.CurrentSealKey)
	unreadable, changed := map[string]int{}, 0
	for _, table := range session.SealedTables {
		c := last[table]
		fmt.Fprintf(stdout, "  %-16s %6d values: %6d re-sealed, %6d already current", table, first[table].Scanned, resealed[table], first[table].Current)
		if n := sum(c.Unreadable); n > 0 {
			fmt.Fprintf(stdout, ", %d cannot be opened", n)
		}
		if c.Changed > 0 {
			fmt.Fprintf(stdout, ", %d written meanwhile", c.Changed)
		}
		fmt.Fprintln(stdout)
		for id, n := range c.Unreadable {
			unreadable[id] += n
		}
		changed += c.Changed
	}
	if changed > 0 {
		fmt.Fprintf(stdout, "%d values were still being written by nodes after %d passes: run rotate-keys again.\n", changed, rewrapPasses)
	}
	return unreadable, changed
}

// reportRetirement says, key by key, when the keys that are no longer current can be retired.
func reportRetirement(stdout io.Writer, keys *session.Keys, unreadable map[string]int, changed int, retireAt time.Time, absolute time.Duration) {
	for _, id := range slices.Sorted(maps.Keys(keys.SealKeys)) {
		switch {
		case id == keys.CurrentSealKey:
		case changed > 0:
			fmt.Fprintf(stdout, "seal key %s: some values may still be sealed under it.\n", id)
		case unreadable[id] > 0:
			fmt.Fprintf(stdout, "seal key %s: %d values under it do not open; they are lost once it is retired.\n", id, unreadable[id])
		default:
			fmt.Fprintf(stdout, "seal key %s: no value is sealed under it any more. Retire it (sessiond keygen -retire %s) once every node runs with this key file and a last rotate-keys run says so.\n", id, id)
		}
	}
	for _, id := range slices.Sorted(maps.Keys(keys.TokenKeys)) {
		if id == keys.CurrentTokenKey {
			continue
		}
		fmt.Fprintf(stdout, "token key %s: still verifies the tokens of sessions not used since they were issued under it. They have all ended by %s (%s from now), when %s can be retired (sessiond keygen -retire %s); sessions used before then are re-hashed under %s. If a node still runs an older key file, count from when the last one restarts with this one.\n",
			id, retireAt.Format(time.RFC3339), absolute, id, id, keys.CurrentTokenKey)
	}
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}
