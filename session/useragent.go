package session

import (
	"strconv"
	"strings"
)

// One reading of User-Agent strings, for both uses: the fingerprint compares "family/major"
// (agentFamily) and device lists show a human label (DeviceLabel).

// agents are the browsers and libraries recognised, first match wins (Edge and Opera also say
// Chrome; Chrome also says Safari). version names the token the major version follows when it
// is not the product token itself (Safari: "Version/17.1 … Safari/605").
var agents = []struct{ token, family, name, version string }{
	{"Edg/", "edge", "Edge", ""}, {"OPR/", "opera", "Opera", ""}, {"Firefox/", "firefox", "Firefox", ""},
	{"Chromium/", "chromium", "Chromium", ""}, {"HeadlessChrome/", "chrome", "Headless Chrome", ""},
	{"Chrome/", "chrome", "Chrome", ""}, {"Safari/", "safari", "Safari", "Version/"},
	{"Go-http-client/", "go", "Go client", ""}, {"curl/", "curl", "curl", ""}, {"node/", "node", "Node.js", ""},
}

var systems = []struct{ token, name string }{
	{"Android", "Android"}, {"iPhone", "iOS"}, {"iPad", "iPadOS"}, {"Windows", "Windows"},
	{"Mac OS X", "macOS"}, {"CrOS", "ChromeOS"}, {"Linux", "Linux"},
}

// majorAfter returns the digits that follow token in ua ("131" of "Chrome/131.0"), or "".
func majorAfter(ua, token string) string {
	i := strings.Index(ua, token)
	if i < 0 {
		return ""
	}
	v := ua[i+len(token):]
	if j := strings.IndexAny(v, ". ;)"); j >= 0 {
		v = v[:j]
	}
	if _, err := strconv.Atoi(v); err != nil {
		return ""
	}
	return v
}

// agentFamily extracts "product/major" of the browser or library that made the request: a
// known one by its token, anything else by its first product token ("myapp/3"), so that an
// unrecognised agent is compared like any other rather than skipped. An empty User-Agent
// gives "".
func agentFamily(ua string) string {
	for _, a := range agents {
		if strings.Contains(ua, a.token) {
			vt := a.version
			if vt == "" || !strings.Contains(ua, vt) {
				vt = a.token
			}
			return a.family + "/" + majorAfter(ua, vt)
		}
	}
	ua = strings.TrimSpace(ua)
	if ua == "" {
		return ""
	}
	first := strings.Fields(ua)[0]
	name, _, _ := strings.Cut(first, "/")
	name = strings.ToLower(name)
	if len(name) > 32 {
		name = name[:32]
	}
	return name + "/" + majorAfter(first, name+"/")
}

// DeviceLabel derives a human device label ("Firefox on Linux") from a User-Agent: the common
// browsers and systems by name, a short printable prefix of anything else, "unknown device"
// without one.
func DeviceLabel(ua string) string {
	if ua == "" {
		return "unknown device"
	}
	browser, system := "", ""
	for _, a := range agents {
		if strings.Contains(ua, a.token) {
			browser = a.name
			break
		}
	}
	for _, o := range systems {
		if strings.Contains(ua, o.token) {
			system = o.name
			break
		}
	}
	switch {
	case browser != "" && system != "":
		return browser + " on " + system
	case browser != "":
		return browser
	case system != "":
		return "browser on " + system
	}
	label := strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, ua)
	if r := []rune(label); len(r) > 40 {
		label = string(r[:40])
	}
	return label
}
