// Command e2etool holds the small helpers of the end-to-end script
// (hack/e2e/run.sh) that are clumsy in bash: picking free loopback ports,
// a local upstream REST service that counts its calls, rewriting the config
// the operator rendered for a run outside the cluster, and translating an
// Ingress into the nginx configuration ingress-nginx would serve.
//
//	e2etool ports N
//	e2etool upstream --addr-file FILE
//	e2etool workload-config --in FILE --out FILE --listen ADDR --data-dir DIR --token-file FILE
//	e2etool nginx-conf --ingress FILE --listen ADDR --backend ADDR --prefix DIR [--run-as-root] [--json-errors]
//	e2etool json FIELD|--error < object.json
package main

import (
	"errors"
	"fmt"
	"os"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "e2etool:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) == 0 {
		return errors.New("usage: e2etool ports|upstream|workload-config|nginx-conf|json ...")
	}
	switch args[0] {
	case "ports":
		return cmdPorts(args[1:])
	case "upstream":
		return cmdUpstream(args[1:])
	case "workload-config":
		return cmdWorkloadConfig(args[1:])
	case "nginx-conf":
		return cmdNginxConf(args[1:])
	case "json":
		return cmdJSON(args[1:])
	default:
		return fmt.Errorf("unknown command %q", args[0])
	}
}
