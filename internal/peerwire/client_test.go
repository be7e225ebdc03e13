package peerwire

import (
	"net"
	"testing"
)

func TestClientConfigFamilies(t *testing.T) {
	tests := []struct {
		listen             string
		network            string
		disable4, disable6 bool
	}{
		{"0.0.0.0:6881", "tcp4", false, true},
		{"127.0.0.1:0", "tcp4", false, true},
		{"10.1.2.3:6881", "tcp4", false, true},
		{"[::ffff:10.1.2.3]:6881", "tcp4", false, true}, // an IPv4 address, mapped
		{"[::]:6881", "tcp6", true, false},
		{"[::1]:6881", "tcp6", true, false},
		{"[fe80::1%eth0]:6881", "tcp6", true, false},
		{":6881", "tcp", false, false},
		{"node-1.example:6881", "tcp", false, false},
		{"10.1.2.3", "tcp", false, false}, // no port: left to Attach's listen to refuse
	}
	for _, tt := range tests {
		cfg, network := ClientConfig(tt.listen, nil)
		if network != tt.network || cfg.DisableIPv4 != tt.disable4 || cfg.DisableIPv6 != tt.disable6 {
			t.Errorf("%q: network %s, DisableIPv4 %v, DisableIPv6 %v; want %s, %v, %v",
				tt.listen, network, cfg.DisableIPv4, cfg.DisableIPv6, tt.network, tt.disable4, tt.disable6)
		}
		// The wire is closed whatever the address.
		if !cfg.DisableTCP || !cfg.DisableUTP || !cfg.NoDHT || !cfg.Seed || !cfg.DisableWebseeds {
			t.Errorf("%q: a socket or web seeds of the client's own, or no seeding: %+v", tt.listen, cfg)
		}
	}
}

func TestClientConfigAdvertise(t *testing.T) {
	tests := []struct {
		advertise    string
		want4, want6 string // "" = unset
	}{
		{"", "", ""},
		{"10.1.2.3", "10.1.2.3", ""},
		{"2001:db8::7", "", "2001:db8::7"},
	}
	for _, tt := range tests {
		cfg, _ := ClientConfig("0.0.0.0:6881", net.ParseIP(tt.advertise))
		if got := ipString(cfg.PublicIp4); got != tt.want4 {
			t.Errorf("advertise %q: PublicIp4 %q, want %q", tt.advertise, got, tt.want4)
		}
		if len(cfg.PublicIp4) != 0 && len(cfg.PublicIp4) != net.IPv4len {
			t.Errorf("advertise %q: PublicIp4 is %d bytes, want the 4-byte form", tt.advertise, len(cfg.PublicIp4))
		}
		if got := ipString(cfg.PublicIp6); got != tt.want6 {
			t.Errorf("advertise %q: PublicIp6 %q, want %q", tt.advertise, got, tt.want6)
		}
	}
}

func ipString(ip net.IP) string {
	if ip == nil {
		return ""
	}
	return ip.String()
}
