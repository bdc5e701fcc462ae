# GPU caps: per resource (all tracks), and per namespace counting the other resources there
# (input.namespace_usage.gpus, summed by the webhook over the namespace's other AutoGLMDeployments).
package autoglm.admission.gpu_quota

import data.autoglm.admission.lib

violation contains {"field": "spec.runtime.resources.gpus", "message": msg} if {
	lib.total_gpus > data.autoglm.config.max_gpus_per_resource
	msg := sprintf("asks for %d GPUs (gpus %d x (replicas %d + canary replicas %d)), above the cap of %d per AutoGLMDeployment; lower replicas or GPUs per pod", [lib.total_gpus, lib.gpus, lib.replicas, lib.canary_replicas, data.autoglm.config.max_gpus_per_resource])
}

violation contains {"field": "spec.runtime.resources.gpus", "message": msg} if {
	cap := lib.per_namespace(data.autoglm.config.max_gpus_per_namespace)
	used := object.get(input, ["namespace_usage", "gpus"], 0)
	used + lib.total_gpus > cap
	msg := sprintf("namespace %s would use %d GPUs (%d by other deployments + %d by this one), above its quota of %d; free GPUs elsewhere or ask for a larger quota", [input.namespace.name, used + lib.total_gpus, used, lib.total_gpus, cap])
}
