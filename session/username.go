package session

import (
	"fmt"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/cases"
	"golang.org/x/text/unicode/norm"
)

// MaxUsernameLen is the longest username, in code points after NFC normalisation.
const MaxUsernameLen = 64

var folder = cases.Fold()

// NormalizeUsername returns the form under which a username is stored and compared: NFC, then
// Unicode case folding (and NFC again, since folding can denormalise). It refuses empty, too long,
// invalid UTF-8 and control characters with ErrBadInput.
func NormalizeUsername(name string) (string, error) {
	if !utf8.ValidString(name) {
		return "", fmt.Errorf("%w: username is not valid UTF-8", ErrBadInput)
	}
	n := norm.NFC.String(name)
	count := utf8.RuneCountInString(n)
	if count == 0 {
		return "", fmt.Errorf("%w: username is empty", ErrBadInput)
	}
	if count > MaxUsernameLen {
		return "", fmt.Errorf("%w: username is longer than %d characters", ErrBadInput, MaxUsernameLen)
	}
	for _, r := range n {
		if unicode.IsControl(r) || r == '\u2028' || r == '\u2029' {
			return "", fmt.Errorf("%w: username contains a control character", ErrBadInput)
		}
	}
	return norm.NFC.String(folder.String(n)), nil
}
