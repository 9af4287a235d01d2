package telemetry

// ListenAddressValue is the command-line flag (and config-file key) type of
// --metrics-server: a flag.Value and pflag.Value whose Set runs
// ParseListenAddress and stores the normalised "host:port".
//
// Checking at Set time, rather than when the listener starts, is what makes
// every route that sets the flag agree: the command line, a KILN_ variable
// and a config.toml key all go through Set (see internal/config), so a bad
// address fails the same way, at start-up, with the same message, whichever
// route it came by. The empty string is refused like any malformed address;
// leaving the flag out is how the listener stays off.
//
// A ListenAddressValue is not safe for concurrent use; flags are set before
// a program starts its goroutines.
type ListenAddressValue struct{ addr *string }

// NewListenAddressValue returns a flag value that stores into p. The flag's
// default is *p as it is, unchecked (normally "", meaning off).
func NewListenAddressValue(p *string) *ListenAddressValue {
	return &ListenAddressValue{addr: p}
}

// Set checks and normalises s, and stores it only when it is valid.
func (v *ListenAddressValue) Set(s string) error {
	addr, err := ParseListenAddress(s)
	if err != nil {
		return err
	}
	*v.addr = addr
	return nil
}

// String returns the stored address ("" when off).
func (v *ListenAddressValue) String() string {
	if v == nil || v.addr == nil {
		return ""
	}
	return *v.addr
}

// Type names the value in pflag's usage output.
func (v *ListenAddressValue) Type() string { return "[host]:port" }
