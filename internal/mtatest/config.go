package mtatest

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// layout is where one instance keeps its files, all under dir.
type layout struct {
	dir   string // the instance's own directory, traversable by everyone
	conf  string // config_directory: main.cf, master.cf, maps, certificates
	sasl  string // smtpd.conf and sasldb2 of Cyrus SASL
	queue string // queue_directory
	data  string // data_directory, owned by the postfix user
	mail  string // virtual_mailbox_base: one Maildir per mailbox
	log   string // maillog_file, written by postlogd
}

func newLayout(dir string) layout {
	return layout{
		dir: dir, conf: dir + "/conf", sasl: dir + "/conf/sasl", queue: dir + "/queue", data: dir + "/data",
		mail: dir + "/mail", log: dir + "/maillog",
	}
}

// mapPath is the source file of the hash map name; Postfix reads name.db.
func (l layout) mapPath(name string) string { return l.conf + "/" + name }

// The maps of an instance, written by writeMaps and (greylist) SetGreylisted.
const (
	mapMailboxes = "vmailbox"  // virtual_mailbox_maps: address -> Maildir
	mapGreylist  = "greylist"  // check_recipient_access: address -> 450 4.2.0
	mapQuota     = "quota"     // check_sasl_access, check_sender_access: -> 550 5.4.5
	mapOwners    = "owners"    // smtpd_sender_login_maps: address -> login
	mapTransport = "transport" // transport_maps: domain -> transport
)

// The replies of the access maps (access(5)): the code, the enhanced code and
// the text that Postfix appends to "<address>: ... rejected: ".
const (
	greylistReply = "450 4.2.0 Greylisted, try again later"
	quotaReply    = "550 5.4.5 Daily user sending quota exceeded"
)

// mainCF renders main.cf. Every parameter that a test's behaviour depends
// on is set here, so Debian's defaults and /etc/postfix do not matter.
func mainCF(l layout, o Options, certs certFiles, saslOn bool) string {
	hash := func(name string) string { return "hash:" + l.mapPath(name) }
	lines := []string{
		"compatibility_level = 3.6",
		"queue_directory = " + l.queue,
		"data_directory = " + l.data,
		// postlogd writes the log to a file under the instance's directory;
		// Postfix refuses a maillog_file outside maillog_file_prefixes.
		"maillog_file = " + l.log,
		"maillog_file_prefixes = " + l.dir,
		"myhostname = localhost",
		"mydestination =",
		"mynetworks = 127.0.0.0/8",
		"inet_interfaces = 127.0.0.1",
		"inet_protocols = ipv4",
		"alias_maps =",
		"alias_database =",
		"biff = no",
		"smtpd_peername_lookup = no",
		"recipient_delimiter =",
		"smtpd_banner = $myhostname ESMTP mtatest",
		"smtputf8_enable = " + yesNo(!o.NoSMTPUTF8),

		"virtual_mailbox_domains = " + o.Domain,
		"virtual_mailbox_base = " + l.mail,
		"virtual_mailbox_maps = " + hash(mapMailboxes),
		"virtual_uid_maps = static:" + fmt.Sprint(mailUID),
		"virtual_gid_maps = static:" + fmt.Sprint(mailUID),

		"smtpd_tls_security_level = may",
		"smtpd_tls_cert_file = " + certs.Cert,
		"smtpd_tls_key_file = " + certs.Key,
		"smtpd_tls_loglevel = 1",
		"smtpd_tls_auth_only = " + yesNo(!o.PlaintextAuth),

		// Refusals of MAIL FROM come at MAIL FROM, not at the first RCPT.
		"smtpd_delay_reject = no",
		"smtpd_sender_restrictions = " + strings.Join(senderRestrictions(o, hash), ", "),
		"smtpd_relay_restrictions = permit_sasl_authenticated, reject_unauth_destination",
		"smtpd_recipient_restrictions = check_recipient_access " + hash(mapGreylist),
	}
	if saslOn {
		lines = append(lines,
			"smtpd_sasl_auth_enable = yes",
			"smtpd_sasl_type = cyrus",
			"smtpd_sasl_path = smtpd",
			// Debian's Postfix reads smtpd.conf from config_directory/sasl
			// whatever cyrus_sasl_config_path says; set it there too.
			"cyrus_sasl_config_path = "+l.sasl,
			"smtpd_sasl_local_domain = "+o.Domain,
			"smtpd_sasl_security_options = noanonymous",
			"smtpd_sasl_tls_security_options = noanonymous",
		)
	}
	if len(o.SenderOwners) > 0 {
		lines = append(lines, "smtpd_sender_login_maps = "+hash(mapOwners))
	}
	if o.MaxConnections > 0 {
		lines = append(lines,
			fmt.Sprintf("smtpd_client_connection_count_limit = %d", o.MaxConnections),
			// Empty, or loopback (in mynetworks) would be exempt.
			"smtpd_client_event_limit_exceptions =",
		)
	}
	if o.MessageSizeLimit > 0 {
		lines = append(lines, fmt.Sprintf("message_size_limit = %d", o.MessageSizeLimit))
	}
	if len(o.Transports) > 0 {
		lines = append(lines,
			"transport_maps = "+hash(mapTransport),
			"relay_domains = "+strings.Join(slices.Sorted(maps.Keys(o.Transports)), " "),
		)
	}
	lines = append(lines, o.Extra...)
	return strings.Join(lines, "\n") + "\n"
}

// senderRestrictions are smtpd_sender_restrictions, applied at MAIL FROM.
func senderRestrictions(o Options, hash func(string) string) []string {
	var r []string
	if len(o.SenderOwners) > 0 {
		r = append(r, "reject_sender_login_mismatch")
	}
	if len(o.OverQuota) > 0 {
		if len(o.Users) > 0 {
			r = append(r, "check_sasl_access "+hash(mapQuota))
		}
		r = append(r, "check_sender_access "+hash(mapQuota))
	}
	if o.AuthRequired {
		r = append(r, "permit_sasl_authenticated", "reject")
	}
	if len(r) == 0 {
		r = append(r, "permit")
	}
	return r
}

// masterCF renders master.cf: the two listeners on loopback ports and the
// services that they and delivery need, none chrooted (the "n" in the
// fifth column), since the instance has no chroot tree.
func masterCF(submission, smtps int) string {
	return fmt.Sprintf(`# service type  private unpriv  chroot  wakeup  maxproc command + args
127.0.0.1:%d inet n - n - - smtpd
127.0.0.1:%d inet n - n - - smtpd
  -o smtpd_tls_wrappermode=yes
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
virtual   unix  -       n       n       -       -       virtual
postlog   unix-dgram n  -       n       -       1       postlogd
`, submission, smtps)
}

// mapEntries are the initial contents of every map, key to value.
func mapEntries(o Options) map[string]map[string]string {
	m := map[string]map[string]string{
		mapMailboxes: {}, mapGreylist: {}, mapQuota: {}, mapOwners: {}, mapTransport: {},
	}
	for _, box := range o.Mailboxes {
		m[mapMailboxes][box+"@"+o.Domain] = box + "/" // the slash: a Maildir
	}
	for _, r := range o.Greylisted {
		m[mapGreylist][r] = greylistReply
	}
	for _, s := range o.OverQuota {
		m[mapQuota][s] = quotaReply
	}
	for addr, login := range o.SenderOwners {
		m[mapOwners][addr] = login
	}
	maps.Copy(m[mapTransport], o.Transports)
	return m
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
