package node

import (
	"bytes"
	"strings"
	"testing"
)

func TestSubsystemLevels(t *testing.T) {
	var buf bytes.Buffer
	log := NewLogger(&buf, LogConfig{Level: "warn", Format: "text", Subsystems: []string{"p2p=debug"}})
	log.Info("base info hidden")
	log.Warn("base warn shown")
	log.With("subsystem", "p2p").Debug("p2p debug shown")
	log.With("subsystem", "store").Info("store info hidden")
	out := buf.String()
	for _, want := range []string{"base warn shown", "p2p debug shown"} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in %q", want, out)
		}
	}
	for _, hidden := range []string{"base info hidden", "store info hidden"} {
		if strings.Contains(out, hidden) {
			t.Errorf("%q should be filtered: %q", hidden, out)
		}
	}
	if _, err := parseSubsystemLevels([]string{"p2p"}); err == nil {
		t.Error("want an error for an entry without =level")
	}
}
