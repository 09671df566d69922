module github.com/medops/medops/hack/tools/traefik

go 1.26.0

require github.com/traefik/traefik/v3 v3.7.13

// Traefik's own replace lines do not apply to a module that requires it; these
// stand in for them with what the module proxy here serves.
replace (
	// A nested module that the v3 zip leaves out and the proxy refuses: a local stub.
	github.com/traefik/traefik/dynamic/ext => ./ext
	// The fork commit v3.7.13 pins is not served; this earlier one of the same fork is.
	github.com/abbot/go-http-auth => github.com/containous/go-http-auth v0.4.1-0.20200324110947-a37a7636d23e
	github.com/gorilla/mux => github.com/containous/mux v0.0.0-20250523120546-41b6ec3aed59
)

// hack/tools.sh copies lego v5.4.1 from the module cache into ./lego5 of a
// temporary copy of this module, with only the exec and manual DNS providers
// (lego-dns-providers.go.txt). No lego code is committed.
replace github.com/go-acme/lego/v5 => ./lego5

exclude github.com/tencentcloud/tencentcloud-sdk-go v3.0.83+incompatible
