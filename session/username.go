package session

import (
	"fmt"
	"strings"
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
	return norm.NFC.String(strings.Map(cherokeeFold, folder.String(n))), nil
}

// cherokeeFold finishes case folding for Cherokee, the one script Unicode folds to its
// capitals (CaseFolding.txt: U+AB70–U+ABBF to U+13A0–U+13EF, U+13F8–U+13FD to U+13F0–U+13F5).
// x/text's folder maps the small letters to capitals but the capitals to small letters, so
// folding alone is not idempotent ("ꮌ" → "Ꮌ" → "ꮌ": found by FuzzNormalizeUsername); after it,
// every Cherokee small letter becomes its capital, as Unicode says.
func cherokeeFold(r rune) rune {
	switch {
	case r >= 0xAB70 && r <= 0xABBF:
		return r - 0xAB70 + 0x13A0
	case r >= 0x13F8 && r <= 0x13FD:
		return r - 0x13F8 + 0x13F0
	}
	return r
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
