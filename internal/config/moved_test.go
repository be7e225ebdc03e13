package config

import (
	"reflect"
	"strings"
	"testing"
)

type movedSample struct {
	Addr string `yaml:"addr"`
	P2P  struct {
		Addr     string `yaml:"addr"`
		DataAddr string `yaml:"dataAddr"`
		Port     int    `yaml:"port"`
	} `yaml:"p2p"`
}

func TestDecodeMoved(t *testing.T) {
	moved := Moved{"p2p.listen": "addr", "p2p.dataListen": "dataAddr"}
	for _, tc := range []struct {
		name, in string
		addr     string
		dataAddr string
		used     []string
		wantErr  string
	}{
		{name: "new names", in: "p2p:\n  addr: a:1\n  dataAddr: b:2\n", addr: "a:1", dataAddr: "b:2"},
		{name: "old names still read", in: "addr: top\np2p:\n  listen: a:1\n  dataListen: b:2\n", addr: "a:1", dataAddr: "b:2",
			used: []string{"p2p.dataListen is now p2p.dataAddr", "p2p.listen is now p2p.addr"}},
		{name: "flow style, both on one line", in: "p2p: {listen: a:1, dataListen: b:2}\n", addr: "a:1", dataAddr: "b:2",
			used: []string{"p2p.dataListen is now p2p.dataAddr", "p2p.listen is now p2p.addr"}},
		{name: "quoted key", in: "p2p:\n  \"listen\": a:1\n", addr: "a:1", used: []string{"p2p.listen is now p2p.addr"}},
		{name: "only in its block", in: "listen: x\n", wantErr: `line 1: unknown key "listen"`},
		{name: "old and new both set", in: "p2p:\n  addr: a:1\n  listen: a:2\n", wantErr: `line 3: key "p2p.listen" is the old name of "addr", which is set too (line 2)`},
		{name: "later errors keep their line", in: "p2p:\n  listen: a:1\n  port: many\n", wantErr: "line 3"},
		{name: "renamed still refused", in: "p2p:\n  token: x\n", wantErr: `key "p2p.token" is no longer read: gone`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s movedSample
			used, err := DecodeMoved([]byte(tc.in), &s, Renamed{"p2p.token": "gone"}, moved)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s.P2P.Addr != tc.addr || s.P2P.DataAddr != tc.dataAddr || !reflect.DeepEqual(used, tc.used) {
				t.Fatalf("decoded %+v, used %q; want %s %s %q", s.P2P, used, tc.addr, tc.dataAddr, tc.used)
			}
		})
	}
}
