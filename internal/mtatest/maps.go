package mtatest

import (
	"context"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"time"
)

// writeMap writes the hash map name of the instance (access(5) or
// postmap(1) format, "key value" a line) and builds its .db with postmap.
// A running smtpd notices the new .db (by its mtime, in seconds) and
// restarts before its next connection.
func writeMap(l layout, name string, entries map[string]string) error {
	db := l.mapPath(name) + ".db"
	before, statErr := os.Stat(db)
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
	if err := run(ctx, "postmap", "-c", l.conf, "hash:"+path); err != nil {
		return err
	}
	if statErr != nil {
		return nil // a new map: no process has it open
	}
	// postmap rewrites the .db in place: a change within the second of the
	// last one would go unnoticed, so the mtime moves a second on.
	after, err := os.Stat(db)
	if err != nil {
		return err
	}
	if after.ModTime().Unix() <= before.ModTime().Unix() {
		next := before.ModTime().Truncate(time.Second).Add(time.Second)
		return os.Chtimes(db, next, next)
	}
	return nil
}
