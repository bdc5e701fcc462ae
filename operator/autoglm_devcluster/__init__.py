"""The embedded dev cluster: real Kubernetes control plane processes, a KWOK node fleet, and test
infrastructure. Never shipped in the operator image."""
