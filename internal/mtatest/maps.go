package mtatest

import (
	"context"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
)

// writeMap writes the hash map name of the instance (access(5) or
// postmap(1) format, "key value" a line) and builds its .db with postmap.
// A running smtpd notices the new .db and restarts before its next
// connection.
func writeMap(l layout, name string, entries map[string]string) error {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(entries)) {
		fmt.Fprintf(&b, "%s %s\n", k, entries[k])
	}
	path := l.mapPath(name)
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil { //nolint:gosec // G306: the postfix user reads the maps
		return fmt.Errorf("mtatest: write map %s: %w", name, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	return run(ctx, "postmap", "-c", l.conf, "hash:"+path)
}
