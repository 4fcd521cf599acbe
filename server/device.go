package server

import "strings"

// labelFromUserAgent derives a human device label ("Firefox on Linux") from a User-Agent. It
// recognises the common browsers and systems and says "unknown device" otherwise.
func labelFromUserAgent(ua string) string {
	if ua == "" {
		return "unknown device"
	}
	browser := ""
	for _, b := range []struct{ token, name string }{
		{"Edg/", "Edge"}, {"OPR/", "Opera"}, {"Firefox/", "Firefox"}, {"Chromium/", "Chromium"},
		{"HeadlessChrome/", "Headless Chrome"}, {"Chrome/", "Chrome"}, {"Safari/", "Safari"},
		{"Go-http-client", "Go client"}, {"curl/", "curl"}, {"node", "Node.js"},
	} {
		if strings.Contains(ua, b.token) {
			browser = b.name
			break
		}
	}
	system := ""
	for _, o := range []struct{ token, name string }{
		{"Android", "Android"}, {"iPhone", "iOS"}, {"iPad", "iPadOS"}, {"Windows", "Windows"},
		{"Mac OS X", "macOS"}, {"CrOS", "ChromeOS"}, {"Linux", "Linux"},
	} {
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
	// An unrecognised agent: keep a short, printable prefix of it.
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
