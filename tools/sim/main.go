// Command sim is a discrete-event model of a Shoal rollout that drives
// the real decision code: agent/sched (Plan, Watch, Rank, the rendezvous
// shares) for every node's every go-round, and the tracker's
// MemoryStore.Announce and hand-out policy for every announce. The rest
// of the agent's engine (agent/swarm.go's run loop, the data server's
// upload slots, anacrolix's connection limits) and the network (fluid
// max-min fair flows over per-node links) are modelled; see README.md.
//
//	sim run [flags]        one rollout, JSON on stdout
//	sim validate -out DIR  every e2e netns cell, simulated beside measured
//	sim project -out DIR   N = 1,000 / 10,000 at 64 MiB and 1 GiB; Kraken's experiment
//	sim charts -out DIR    the projections' CDF and p50/max ÷ T* against N, together
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"runtime/pprof"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: sim run|validate|project [flags]")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "run":
		fs := flag.NewFlagSet("run", flag.ExitOnError)
		p := DefaultParams()
		n := fs.Int("n", 8, "nodes")
		mib := fs.Int64("mib", 64, "image MiB")
		layers := fs.Int("layers", 4, "layers")
		rate := fs.Float64("mbit", 200, "every link's rate, Mbit/s")
		reg := fs.Float64("regmbit", 0, "registry uplink, Mbit/s (0: -mbit)")
		cpu := fs.Float64("hostcpu", 0, "host CPU budget for node-to-node bytes, MB/s (0: off)")
		q := fs.Float64("quantum", 0, "rate recompute quantum, seconds")
		seed := fs.Uint64("seed", 1, "seed")
		plen := fs.Int64("piece", 1<<20, "piece length")
		rtt := fs.Float64("rtt", p.RTT, "RTT seconds")
		unf := fs.Float64("unfair", p.Unfairness, "flow weight spread (lognormal sigma)")
		sb := fs.Float64("sndbuf", p.SendBuffer, "send buffer bytes")
		conns := fs.Int("maxconns", p.MaxConns, "established connections per torrent")
		numwant := fs.Int("numwant", p.Numwant, "peers asked of the tracker")
		pokeHave := fs.Bool("pokeonhave", false, "engine variant: wake on a neighbour's have")
		stealUnmarked := fs.Bool("stealunmarked", false, "what-if: steals without the share header (the agent before it marked them), so the registry serves duplicate ones")
		backoff := fs.Float64("backoff", p.BusyBackoff, "engine variant: busy backoff seconds")
		period := fs.Float64("period", p.UnfairPeriod, "seconds between flow weight draws")
		stall := fs.Float64("stall", p.StallTimeout, "agents' p2p.stallTimeout, seconds")
		prof := fs.String("cpuprofile", "", "write a CPU profile of the run to this file")
		scale := fs.Bool("scalecell", false, "a TestScale cell: -stall, -sndbuf and -maxconns as that run's agents (cells.go)")
		fs.Parse(os.Args[2:])
		p.StallTimeout = *stall
		if *scale {
			*sb, *conns, p.StallTimeout = 2*DataSendBuffer, 50, ScaleStallTimeout
		}
		p.UnfairPeriod = *period
		p.PokeOnHave, p.BusyBackoff, p.StealUnmarked = *pokeHave, *backoff, *stealUnmarked
		p.MaxConns, p.Numwant = *conns, *numwant
		p.SendBuffer = *sb
		p.Unfairness = *unf
		p.N, p.Image, p.Layers, p.Quantum, p.Seed, p.PieceLen, p.RTT = *n, *mib<<20, *layers, *q, *seed, *plen, *rtt
		p.Up, p.Down, p.RegistryUp = mbit(*rate), mbit(*rate), mbit(*rate)
		if *reg > 0 {
			p.RegistryUp = mbit(*reg)
		}
		p.HostCPU = *cpu * 1e6
		if *prof != "" {
			f, err := os.Create(*prof)
			if err != nil {
				fmt.Fprintln(os.Stderr, "sim:", err)
				os.Exit(1)
			}
			if err := pprof.StartCPUProfile(f); err != nil {
				fmt.Fprintln(os.Stderr, "sim:", err)
				os.Exit(1)
			}
			defer f.Close()
			defer pprof.StopCPUProfile()
		}
		r := newWorld(p).run()
		r.Seconds = nil
		b, _ := json.MarshalIndent(r, "", "  ")
		fmt.Println(string(b))
	default:
		cmd, ok := commands[os.Args[1]]
		if !ok {
			fmt.Fprintln(os.Stderr, "unknown command", os.Args[1])
			os.Exit(2)
		}
		if err := cmd(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "sim:", err)
			os.Exit(1)
		}
	}
}

var commands = map[string]func(args []string) error{}

func init() {
	commands["validate"] = cmdValidate
	commands["project"] = cmdProject
	commands["scale"] = cmdScale
	commands["charts"] = cmdCharts
}
