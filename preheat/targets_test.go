package preheat

import "testing"

func TestTargetSpecValidate(t *testing.T) {
	for _, ts := range []TargetSpec{{Count: -1}, {Percentage: 101}, {Percentage: -5}, {Count: 1, Percentage: 10}, {Nodes: []string{"a b"}}} {
		if err := validateSpec(ts); err == nil {
			t.Errorf("%+v accepted", ts)
		}
	}
	if err := validateSpec(TargetSpec{Count: 3, Nodes: []string{"10.0.0.1", "node-1"}}); err != nil {
		t.Errorf("valid spec refused: %v", err)
	}
}
