# The two commands that matter (see README.md): `make run` and `make test`.
.PHONY: run test web web-check build fuzz-short

# Installs the pinned npm packages (npm ci) and rebuilds the demo page's OPAQUE bundle
# web/static/vendor/opaque.js from them (npm run build). The bundle is committed, so the server
# and its page work without npm; without npm the interop and browser tests are skipped locally.
# Then packs the client package (npm pack in web/client), installs the tarball into examples/spa
# with that example's pinned packages, type-checks it strictly (tsc: the app, a React hook and a
# Svelte store written against the package's types) and bundles it (esbuild).
web:
	@if command -v npm >/dev/null 2>&1; then \
		npm ci --prefix web --no-audit --no-fund --loglevel=error && npm run --prefix web --silent build && \
		rm -f examples/spa/sessiond-client-*.tgz && \
		(cd web/client && npm pack --silent --pack-destination ../../examples/spa >/dev/null) && \
		npm ci --prefix examples/spa --no-audit --no-fund --loglevel=error && \
		(cd examples/spa && npm install --no-save --no-audit --no-fund --loglevel=error ./sessiond-client-*.tgz) && \
		npm run --prefix examples/spa --silent build; \
	else echo "npm not found: the interop, client-package and browser tests will be skipped"; fi

# Fails when the rebuilt bundle differs from the committed one (run after `make web`).
web-check:
	@git diff --exit-code --stat -- web/static/vendor || { echo "web/static/vendor/opaque.js differs from a rebuild from web/package-lock.json: commit the rebuilt bundle"; exit 1; }

# Starts the server with the embedded store and the demo page at http://127.0.0.1:8080/.
# Needs Go only: the page's OPAQUE bundle is committed.
run:
	go run ./cmd/sessiond

# The binary says its version and VCS revision (sessiond version, sessiond_build_info): from
# git when building in a checkout, or set them: make build VERSION=1.4.0.
build:
	CGO_ENABLED=0 go build -trimpath -buildvcs=auto $(if $(VERSION),-ldflags "-X main.version=$(VERSION)") -o sessiond ./cmd/sessiond

# Runs every test with the race detector. PostgreSQL and Redis tests run when
# TEST_POSTGRES_URL / TEST_REDIS_URL are set (CI sets them), and are skipped otherwise.
test: web
	go vet ./...
	go test -race -count=1 -timeout 20m ./...
	$(MAKE) fuzz-short

# A short coverage-guided run of every fuzz target (the seed corpora already run above). The
# runs are bounded by a count of inputs, not by time: with a duration, Go 1.26's fuzzing
# coordinator can report its own deadline as a failure ("context deadline exceeded", no
# crasher: go.dev/issue/75804, fixed in Go 1.27). The counts are a few seconds' worth each.
fuzz-short:
	go test -run '^$$' -fuzz '^FuzzDecodeInbound$$' -fuzztime 50000x ./server
	go test -run '^$$' -fuzz '^FuzzParseToken$$' -fuzztime 50000x ./session
	go test -run '^$$' -fuzz '^FuzzNormalizeUsername$$' -fuzztime 50000x ./session
	go test -run '^$$' -fuzz '^FuzzOPAQUEMessages$$' -fuzztime 30000x ./session
