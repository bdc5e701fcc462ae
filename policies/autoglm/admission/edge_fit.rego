# Edge placement only with a format, memory and GPU count that edge nodes can hold.
package autoglm.admission.edge_fit

import data.autoglm.admission.lib

edge if object.get(lib.spec, ["placement", "target"], "cloud") == "edge"

format := object.get(lib.spec, ["model", "format"], "tensorrt_plan")

violation contains {"field": "spec.model.format", "message": msg} if {
	edge
	not format in data.autoglm.config.edge_formats
	msg := sprintf("format %q cannot run on edge nodes; use one of %s", [format, concat(", ", data.autoglm.config.edge_formats)])
}

violation contains {"field": "spec.model.engines", "message": msg} if {
	edge
	format == "tensorrt_plan"
	not lib.spec.model.build # built for the edge GPUs placement allows
	ccs := {e.computeCapability | some e in object.get(lib.spec, ["model", "engines"], [])}
	count(ccs & {c | some c in data.autoglm.config.edge_compute_capabilities}) == 0
	msg := sprintf("no engine is built for an edge GPU (compute capability %s); add one, or use format onnx or python", [concat(", ", data.autoglm.config.edge_compute_capabilities)])
}

violation contains {"field": "spec.runtime.resources.memory", "message": msg} if {
	edge
	memory := object.get(lib.spec, ["runtime", "resources", "memory"], "8Gi")
	lib.quantity(memory) > lib.quantity(data.autoglm.config.edge_max_memory)
	msg := sprintf("memory %v does not fit an edge node (at most %v); lower it or place on cloud nodes", [memory, data.autoglm.config.edge_max_memory])
}

violation contains {"field": "spec.runtime.resources.gpus", "message": msg} if {
	edge
	lib.gpus > data.autoglm.config.edge_max_gpus
	msg := sprintf("%d GPUs per pod do not fit an edge node (at most %d)", [lib.gpus, data.autoglm.config.edge_max_gpus])
}
