package unixfs

// Type is the kind of a UnixFS entry. Its values read well in JSON.
type Type string

const (
	TypeFile      Type = "file"      // a UnixFS file or a raw block
	TypeDirectory Type = "directory" // basic or HAMT-sharded
	TypeSymlink   Type = "symlink"
)
