package node

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// subsystemHandler applies a per-subsystem level: a logger made with
// log.With("subsystem", "p2p") logs at the level configured for p2p, and
// every other record at the base level.
type subsystemHandler struct {
	inner  slog.Handler
	base   slog.Level
	levels map[string]slog.Level
	level  slog.Level // the level of this handler's subsystem (or base)
}

func (h *subsystemHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level }

func (h *subsystemHandler) Handle(ctx context.Context, r slog.Record) error {
	return h.inner.Handle(ctx, r)
}

func (h *subsystemHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := *h
	c.inner = h.inner.WithAttrs(attrs)
	for _, a := range attrs {
		if a.Key == "subsystem" {
			if l, ok := h.levels[a.Value.String()]; ok {
				c.level = l
			}
		}
	}
	return &c
}

func (h *subsystemHandler) WithGroup(name string) slog.Handler {
	c := *h
	c.inner = h.inner.WithGroup(name)
	return &c
}

// parseSubsystemLevels reads "p2p=debug" entries.
func parseSubsystemLevels(entries []string) (map[string]slog.Level, error) {
	out := map[string]slog.Level{}
	for _, e := range entries {
		name, lvl, ok := strings.Cut(e, "=")
		var l slog.Level
		if !ok || name == "" || l.UnmarshalText([]byte(lvl)) != nil {
			return nil, fmt.Errorf("bad subsystem level %q (want e.g. p2p=debug; subsystems: p2p, store, feed, collection, api)", e)
		}
		out[name] = l
	}
	return out, nil
}

// NewLogger builds the slog logger described by a LogConfig: text or JSON,
// a base level, and per-subsystem levels.
func NewLogger(w io.Writer, lc LogConfig) *slog.Logger {
	var base slog.Level
	_ = base.UnmarshalText([]byte(lc.Level))
	levels, _ := parseSubsystemLevels(lc.Subsystems) // validated with the config
	min := base
	for _, l := range levels {
		if l < min {
			min = l
		}
	}
	hopts := &slog.HandlerOptions{Level: min}
	var inner slog.Handler = slog.NewTextHandler(w, hopts)
	if lc.Format == "json" {
		inner = slog.NewJSONHandler(w, hopts)
	}
	return slog.New(&subsystemHandler{inner: inner, base: base, levels: levels, level: base})
}
