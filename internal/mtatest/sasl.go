package mtatest

import (
	"context"
	"fmt"
	"os"
	"strings"
)

// writeSASL configures Cyrus SASL for smtpd (smtpd.conf in the sasl
// directory, see layout.sasl) with PLAIN and LOGIN checked against a
// sasldb of users, which the postfix user (smtpd's) can read.
func writeSASL(l layout, o Options, owner account) error {
	db := l.sasl + "/sasldb2"
	conf := strings.Join([]string{
		"pwcheck_method: auxprop",
		"auxprop_plugin: sasldb",
		"mech_list: PLAIN LOGIN",
		"sasldb_path: " + db,
	}, "\n") + "\n"
	if err := os.Mkdir(l.sasl, 0o755); err != nil { //nolint:gosec // G301: smtpd reads it as the postfix user
		return err
	}
	if err := os.WriteFile(l.sasl+"/smtpd.conf", []byte(conf), 0o644); err != nil { //nolint:gosec // G306: smtpd reads it as the postfix user
		return fmt.Errorf("mtatest: write smtpd.conf: %w", err)
	}
	for login, password := range o.Users {
		name, realm := splitLogin(login, o.Domain)
		ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
		err := runInput(ctx, password, "saslpasswd2", "-f", db, "-c", "-p", "-u", realm, name)
		cancel()
		if err != nil {
			return fmt.Errorf("mtatest: add SASL user %q: %w", login, err)
		}
	}
	if err := os.Chown(db, owner.uid, owner.gid); err != nil {
		return fmt.Errorf("mtatest: sasldb: %w", err)
	}
	return os.Chmod(db, 0o600)
}

// splitLogin splits a SASL login name into Cyrus SASL's user and realm, as
// the server does: at the last @, or the whole name in the default realm
// (smtpd_sasl_local_domain, set to the domain).
func splitLogin(login, domain string) (name, realm string) {
	if i := strings.LastIndexByte(login, '@'); i >= 0 {
		return login[:i], login[i+1:]
	}
	return login, domain
}
