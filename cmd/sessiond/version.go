package main

import (
	"fmt"
	"io"
	"runtime/debug"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// version and revision may be set at link time:
//
//	go build -ldflags "-X main.version=1.4.0 -X main.revision=$(git rev-parse HEAD)" ./cmd/sessiond
//
// Otherwise they come from the build information Go records (the module version, or
// "(devel)" for a build from a checkout, and the VCS revision with "-dirty" when the tree had
// changes).
var version, revision string

type buildInfo struct{ Version, Revision, Go string }

func currentBuild() buildInfo {
	b := buildInfo{Version: "(devel)", Revision: "unknown", Go: "unknown"}
	if info, ok := debug.ReadBuildInfo(); ok {
		b.Go = info.GoVersion
		if v := info.Main.Version; v != "" {
			b.Version = v
		}
		dirty := false
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				b.Revision = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
		if dirty && b.Revision != "unknown" {
			b.Revision += "-dirty"
		}
	}
	if version != "" {
		b.Version = version
	}
	if revision != "" {
		b.Revision = revision
	}
	return b
}

func (b buildInfo) String() string {
	return fmt.Sprintf("sessiond %s (revision %s, %s)", b.Version, b.Revision, b.Go)
}

// printVersion answers `sessiond version` and `sessiond -version`.
func printVersion(w io.Writer) error {
	_, err := fmt.Fprintln(w, currentBuild())
	return err
}

// isVersionFlag reports whether args ask for the version (-version or --version).
func isVersionFlag(args []string) bool {
	for _, a := range args {
		if strings.TrimLeft(a, "-") == "version" && strings.HasPrefix(a, "-") {
			return true
		}
	}
	return false
}

// buildInfoMetric is sessiond_build_info{version,revision,go} 1.
func buildInfoMetric(b buildInfo) prometheus.Collector {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "sessiond_build_info",
		Help: "The running build: version, VCS revision and Go version (always 1)."}, []string{"version", "revision", "go"})
	g.WithLabelValues(b.Version, b.Revision, b.Go).Set(1)
	return g
}
