package p2p

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// weft's small NAT protocols (sweep.go, witness.go) frame their messages
// as one line of JSON each, bounded in length.

// writeJSONLine writes v as one line of JSON.
func writeJSONLine(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// newLineReader reads lines of at most max bytes (newline excluded).
func newLineReader(r io.Reader, max int) *bufio.Reader { return bufio.NewReaderSize(r, max+1) }

// readLine reads one line from a newLineReader of the same max, without its
// newline; a longer line is an error.
func readLine(r *bufio.Reader, max int) ([]byte, error) {
	line, err := r.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		return nil, fmt.Errorf("message over %d bytes", max)
	}
	if err != nil {
		return nil, err
	}
	return line[:len(line)-1], nil
}
