# Helpers shared by the policies: Kubernetes quantities, spec accessors with defaults.
package autoglm.admission.lib

multipliers := {
	"": 1, "m": 0.001,
	"k": 1000, "K": 1000, "M": 1000000, "G": 1000000000, "T": 1000000000000,
	"Ki": 1024, "Mi": 1048576, "Gi": 1073741824, "Ti": 1099511627776,
}

# quantity("8Gi") == 8589934592, quantity("500m") == 0.5, quantity(4) == 4
quantity(q) := q if is_number(q)

quantity(q) := n if {
	is_string(q)
	parts := regex.find_all_string_submatch_n(`^([0-9]+(?:\.[0-9]+)?)([a-zA-Z]*)$`, q, 1)
	count(parts) == 1
	n := to_number(parts[0][1]) * multipliers[parts[0][2]]
}

spec := object.get(input, ["object", "spec"], {})

gpus := object.get(spec, ["runtime", "resources", "gpus"], 1)

replicas := object.get(spec, ["runtime", "replicas"], 1)

canary_replicas := object.get(spec, ["canary", "replicas"], 1) if spec.canary
else := 0

total_gpus := gpus * (replicas + canary_replicas)

namespace_labels := object.get(input, ["namespace", "labels"], {})

is_production if {
	namespace_labels[data.autoglm.config.production_label] == data.autoglm.config.production_value
}

# The per-namespace value of a map keyed by namespace name with a "*" default.
per_namespace(m) := m[input.namespace.name]

per_namespace(m) := m["*"] if not m[input.namespace.name]
