package server

// CommandTypes lists the message types of the command table (for tests in package server_test).
func CommandTypes() map[string]bool {
	out := map[string]bool{}
	for typ := range commands {
		out[typ] = true
	}
	return out
}
