package unixfs

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ErrBadName is wrapped by every error for a directory entry name that
// cannot be a single path element: empty, ".", "..", or holding a slash or
// a NUL. Such names are refused on add and wherever a DAG's names are read
// (Ls, Stat, Get), since a DAG from a peer or a CAR may carry anything and a
// name like ".." or "../x" would make a path outside the folder it is
// written to.
var ErrBadName = errors.New("invalid entry name")

// maxQuotedName bounds how much of a bad name an error repeats, so a hostile
// megabyte name does not become a megabyte error message.
const maxQuotedName = 64

// ValidName checks that name, an entry name taken from a DAG or given to an
// add, is one path element. It is the one place the name rules live; the
// error wraps ErrBadName and quotes the name (Go-escaped, cut to 64 bytes).
func ValidName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return fmt.Errorf("%w %s", ErrBadName, QuoteName(name))
	}
	return nil
}

// QuoteName returns name Go-quoted (control bytes and invalid UTF-8
// escaped), cut to its first 64 bytes with "..." after the quote when
// longer: safe to put in a log line or an error.
func QuoteName(name string) string {
	if len(name) <= maxQuotedName {
		return strconv.Quote(name)
	}
	return strconv.Quote(name[:maxQuotedName]) + "..."
}
