package unixfs

import "errors"

var (
	// ErrInvalidOptions is wrapped by every error Options.Validate and
	// Profile return.
	ErrInvalidOptions = errors.New("invalid import options")
	// ErrNotDirectory is returned when a directory was expected, as by Ls.
	ErrNotDirectory = errors.New("not a UnixFS directory")
	// ErrNotFile is returned when file content was expected, as by Cat given
	// a directory or a symlink.
	ErrNotFile = errors.New("not a UnixFS file")
	// ErrNotSymlink is returned when a symlink was expected, as by Readlink.
	ErrNotSymlink = errors.New("not a UnixFS symlink")
	// ErrBadSymlink is wrapped for a symlink whose target no file system
	// could hold: empty, with a NUL, or longer than 4096 bytes.
	ErrBadSymlink = errors.New("invalid symlink target")
	// ErrUnsupported is returned for nodes that are neither UnixFS nor raw
	// (e.g. dag-cbor), or UnixFS types this package does not handle.
	ErrUnsupported = errors.New("unsupported node type")
)
