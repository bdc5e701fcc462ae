//go:build tools

// Package tools pins the Prometheus server built from this module (Prometheus v3.5.1).
package tools

import _ "github.com/prometheus/prometheus/cmd/prometheus"
