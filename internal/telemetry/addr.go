package telemetry

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"unicode"
)

// DefaultMetricsPort is the port the internal metrics listener uses when the
// address names only a host. It is the port GitLab Runner's metrics server
// uses, so existing scrape configurations and firewall rules carry over.
const DefaultMetricsPort = 9252

// ParseListenAddress checks and normalises the value of --metrics-server (or
// metrics_server in the runner's config.toml) and returns a "host:port"
// string ready for net.Listen.
//
// It exists so that a bad address fails at start-up with a message that names
// the problem, instead of the listener failing later (or, worse, silently
// listening somewhere unexpected, as happens when "host:" is passed straight
// to net.Listen and the kernel picks a random port).
//
// Accepted forms are "[host]:port", where host is an IPv4 address, a host
// name or a bracketed IPv6 address (optionally with a zone, "[fe80::1%eth0]"),
// and port is a number from 0 to 65535 or a TCP service name such as "http".
// The port may be left out together with its colon ("localhost", "[::1]"),
// meaning DefaultMetricsPort; the host may be left out (":9000"), meaning all
// interfaces. Port 0 lets the system choose a free port, which is mostly
// useful in tests.
//
// Host names are not resolved here: they are checked for syntax only, and
// net.Listen resolves them.
func ParseListenAddress(s string) (string, error) {
	host, port, err := splitListenAddress(s)
	if err != nil {
		return "", fmt.Errorf("invalid metrics listen address %q: %w", s, err)
	}
	return net.JoinHostPort(host, strconv.Itoa(port)), nil
}

// splitListenAddress does the work of ParseListenAddress; its errors do not
// repeat the input, which the caller adds once.
func splitListenAddress(s string) (host string, port int, err error) {
	if err := checkGarbage(s); err != nil {
		return "", 0, err
	}

	var portStr string
	hasPort := false
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return "", 0, errors.New(`missing "]" after the IPv6 address`)
		}
		host = s[1:end]
		rest := s[end+1:]
		switch {
		case rest == "":
		case rest[0] == ':':
			portStr, hasPort = rest[1:], true
		default:
			return "", 0, fmt.Errorf(`unexpected %q after "]"; expected ":port" or nothing`, rest)
		}
		if err := checkBracketedHost(host); err != nil {
			return "", 0, err
		}
	} else {
		switch strings.Count(s, ":") {
		case 0:
			host = s
		case 1:
			host, portStr, _ = strings.Cut(s, ":")
			hasPort = true
		default:
			return "", 0, fmt.Errorf(`an IPv6 address must be enclosed in brackets, e.g. "[::1]:%d"`, DefaultMetricsPort)
		}
		if strings.ContainsAny(host, "[]") {
			return "", 0, errors.New(`"[" and "]" may only enclose an IPv6 address at the start`)
		}
		if host != "" {
			if err := checkHost(host); err != nil {
				return "", 0, err
			}
		}
	}

	if !hasPort {
		return host, DefaultMetricsPort, nil
	}
	port, err = parsePort(portStr)
	if err != nil {
		return "", 0, err
	}
	return host, port, nil
}

// checkGarbage rejects the inputs people most often paste by mistake (URLs,
// paths, stray spaces) with a message about what they did, rather than the
// less helpful one the later checks would give.
func checkGarbage(s string) error {
	switch {
	case s == "":
		return fmt.Errorf(`address is empty; give "host:port", "host" (port %d) or ":port" (all interfaces)`, DefaultMetricsPort)
	case strings.Contains(s, "://"):
		return errors.New(`looks like a URL; give "host:port" without a scheme`)
	case strings.ContainsFunc(s, unicode.IsSpace):
		return errors.New("contains whitespace")
	case strings.ContainsFunc(s, unicode.IsControl):
		return errors.New("contains a control character")
	case strings.ContainsAny(s, `/\`):
		return errors.New(`contains a slash; give "host:port" without a path`)
	}
	return nil
}

// checkBracketedHost accepts only IPv6 addresses between brackets, as
// net.Listen would otherwise also take "[127.0.0.1]" and "[localhost]",
// which are not valid in URLs and only confuse.
func checkBracketedHost(host string) error {
	if host == "" {
		return errors.New(`empty IPv6 address between "[" and "]"; use "[::]" for all interfaces`)
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || !ip.Is6() {
		return fmt.Errorf("%q between brackets is not an IPv6 address", host)
	}
	return nil
}

// checkHost accepts an IPv4 address or a syntactically valid host name.
func checkHost(host string) error {
	if _, err := netip.ParseAddr(host); err == nil {
		return nil
	}
	name := strings.TrimSuffix(host, ".")
	if len(name) == 0 || len(name) > 253 {
		return fmt.Errorf("invalid host name %q", host)
	}
	allDigits := true
	for label := range strings.SplitSeq(name, ".") {
		if err := checkHostLabel(label); err != nil {
			return fmt.Errorf("invalid host name %q: %w", host, err)
		}
		if strings.Trim(label, "0123456789") != "" {
			allDigits = false
		}
	}
	if allDigits {
		// Something like "300.1.1.1" or "10.0.1": a mistyped IPv4 address,
		// not a name anybody would give a machine.
		return fmt.Errorf("invalid IPv4 address %q", host)
	}
	return nil
}

// checkHostLabel checks one dot-separated label of a host name (RFC 1123,
// plus "_", which container and cloud environments use in practice).
func checkHostLabel(label string) error {
	if label == "" {
		return errors.New("empty label between dots")
	}
	if len(label) > 63 {
		return fmt.Errorf("label %q is longer than 63 characters", label)
	}
	if label[0] == '-' || label[len(label)-1] == '-' {
		return fmt.Errorf("label %q starts or ends with '-'", label)
	}
	for _, r := range label {
		if !isASCIIAlnum(r) && r != '-' && r != '_' {
			return fmt.Errorf("character %q is not allowed", r)
		}
	}
	return nil
}

// parsePort turns a port number or TCP service name into a port number.
func parsePort(s string) (int, error) {
	if s == "" {
		return 0, fmt.Errorf(`empty port after ":"; give a port number or service name, or leave out the ":" to use port %d`, DefaultMetricsPort)
	}
	if strings.Trim(s, "0123456789") == "" {
		n, err := strconv.ParseUint(s, 10, 16)
		if err != nil {
			return 0, fmt.Errorf("port %s out of range 0-65535", s)
		}
		return int(n), nil
	}
	if !isServiceName(s) {
		return 0, fmt.Errorf("invalid port %q: not a number or service name", s)
	}
	n, err := net.LookupPort("tcp", s)
	if err != nil {
		return 0, fmt.Errorf("unknown port name %q (not a number and not a TCP service in /etc/services)", s)
	}
	return n, nil
}

// isServiceName reports whether s has the shape of an IANA service name
// (letters, digits and inner hyphens, at least one letter), so that things
// like "-1" or "+80" are reported as invalid rather than as unknown services.
func isServiceName(s string) bool {
	hasLetter := false
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z':
			hasLetter = true
		case r >= '0' && r <= '9', r == '-':
		default:
			return false
		}
	}
	return hasLetter && s[0] != '-' && s[len(s)-1] != '-'
}

func isASCIIAlnum(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'
}
