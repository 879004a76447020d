// Command harness makes kubeforge's test hosts: systemd + OpenSSH + containerd containers on a dedicated docker
// network, and a ready kubeforge inventory for them.
//
//	go run ./test/harness up N [--control-planes K] [--dir .harness] [--artifacts DIR] [--name-prefix kf]
//	                           [--user root|kube] [--network NAME] [--subnet CIDR] [--subnets K] [--image IMAGE]
//	                           [--node-image NODE=IMAGE ...]
//	go run ./test/harness status [--dir .harness] [--name-prefix kf]
//	go run ./test/harness down   [--dir .harness] [--name-prefix kf]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"

	"github.com/kubeforge/kubeforge/test/harnesslib"
)

const usage = `usage:
  harness up N [flags]   start N nodes (first --control-planes are control planes) and write DIR/inventory.yaml
  harness status [flags] list the nodes
  harness down [flags]   remove exactly what up made (containers, volumes, network, files in DIR)
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "harness:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("missing command")
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	cmd, args := args[0], args[1:]
	fs := flag.NewFlagSet("harness "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", harnesslib.DefaultDir, "state directory (key pair, known_hosts, inventory.yaml)")
	prefix := fs.String("name-prefix", "", "container name prefix; names the harness instance (default kf)")
	switch cmd {
	case "up":
		var o harnesslib.Options
		fs.IntVar(&o.ControlPlanes, "control-planes", 1, "number of control-plane nodes")
		fs.StringVar(&o.Artifacts, "artifacts", "", "artifacts directory to write into the inventory")
		fs.StringVar(&o.User, "user", "root", "SSH user of the inventory: root or kube (passwordless sudo)")
		fs.StringVar(&o.Network, "network", "", "docker network (default kubeforge-harness, or kubeforge-harness-PREFIX)")
		fs.StringVar(&o.Subnet, "subnet", harnesslib.DefaultSubnet, "IPv4 subnet of the network; nodes get .11, .12, ...")
		fs.IntVar(&o.Subnets, "subnets", 1, "spread the nodes over K routed subnets (networks NETWORK-1..K, subnets from --subnet on), L3 only between them")
		fs.StringVar(&o.Image, "image", harnesslib.DefaultImage, "node image (bare; "+harnesslib.ContainerdImage+" has Debian's containerd, "+harnesslib.ResolvedImage+" runs systemd-resolved)")
		fs.Func("node-image", "NODE=IMAGE: another image for one node (repeatable)", func(v string) error {
			n, img, ok := strings.Cut(v, "=")
			if !ok || n == "" || img == "" {
				return fmt.Errorf("want NODE=IMAGE, got %q", v)
			}
			if o.NodeImages == nil {
				o.NodeImages = map[string]string{}
			}
			o.NodeImages[n] = img
			return nil
		})
		fs.DurationVar(&o.BootTimeout, "boot-timeout", 0, "how long to wait for SSH on each node (default 2m)")
		n, rest, err := leadingInt(args)
		if err != nil {
			return err
		}
		if err := fs.Parse(rest); err != nil {
			return err
		}
		if n == 0 && fs.NArg() > 0 {
			if n, err = strconv.Atoi(fs.Arg(0)); err != nil {
				return fmt.Errorf("parse node count %q: %w", fs.Arg(0), err)
			}
		}
		if n == 0 {
			return errors.New("up: give the node count, e.g. `harness up 3`")
		}
		o.Nodes, o.Dir, o.NamePrefix, o.Logger = n, *dir, *prefix, logger
		c, err := harnesslib.Up(ctx, o)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%d node(s) up. Inventory: %s\n", len(c.Nodes), c.Inventory)
		for _, n := range c.Nodes {
			fmt.Fprintf(stdout, "  %-6s %-15s %-14s %-28s ssh -F %s %s\n", n.Name, n.Address, n.Roles[0], n.Network, filepath.Join(c.Dir, harnesslib.SSHConfig), n.Name)
		}
		return nil
	case "status":
		if err := fs.Parse(args); err != nil {
			return err
		}
		c, st, err := harnesslib.Status(ctx, *dir, *prefix)
		if err != nil {
			return err
		}
		if len(st) == 0 {
			fmt.Fprintln(stdout, "no harness nodes")
			return nil
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NODE\tCONTAINER\tADDRESS\tSTATE")
		for _, s := range st {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", s.Node, s.Container, s.Address, s.State)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		if c != nil {
			fmt.Fprintf(stdout, "inventory: %s\n", c.Inventory)
		}
		return nil
	case "down":
		if err := fs.Parse(args); err != nil {
			return err
		}
		if err := harnesslib.DownInstance(ctx, *dir, *prefix); err != nil {
			return err
		}
		fmt.Fprintln(stdout, "harness removed")
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", cmd)
	}
}

// leadingInt takes "N" off the front of args (`up 3 --dir x`); flags may also come first (`up --dir x 3`).
func leadingInt(args []string) (int, []string, error) {
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		n, err := strconv.Atoi(args[0])
		if err != nil {
			return 0, nil, fmt.Errorf("parse node count %q: %w", args[0], err)
		}
		return n, args[1:], nil
	}
	return 0, args, nil
}
