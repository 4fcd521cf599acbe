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
	if err := checkText(n, "username"); err != nil {
		return "", err
	}
	return norm.NFC.String(folder.String(n)), nil
}

// checkText refuses what must not be in a name or label: control characters (NUL included),
// line and paragraph separators, and U+FFFD, which is what a JSON decoder makes of a lone
// surrogate or broken UTF-8 (such input was never meant as text).
func checkText(s, what string) error {
	for _, r := range s {
		switch {
		case unicode.IsControl(r) || r == '\u2028' || r == '\u2029':
			return fmt.Errorf("%w: %s contains a control character", ErrBadInput, what)
		case r == utf8.RuneError:
			return fmt.Errorf("%w: %s contains a lone surrogate or invalid UTF-8", ErrBadInput, what)
		}
	}
	return nil
}

// MaxLabelLen is the longest device label, in characters.
const MaxLabelLen = 128

// CheckLabel validates a device label as a client gave it: valid text of at most MaxLabelLen
// characters.
func CheckLabel(label string) error {
	if !utf8.ValidString(label) {
		return fmt.Errorf("%w: device label is not valid UTF-8", ErrBadInput)
	}
	if utf8.RuneCountInString(label) > MaxLabelLen {
		return fmt.Errorf("%w: device label is longer than %d characters", ErrBadInput, MaxLabelLen)
	}
	return checkText(label, "device label")
}
