# CPU and memory are set and within the platform's maxima (they become requests and limits).
package autoglm.admission.resource_limits

import data.autoglm.admission.lib

resources := object.get(lib.spec, ["runtime", "resources"], {})

violation contains {"field": sprintf("spec.runtime.resources.%s", [name]), "message": msg} if {
	some name in ["cpu", "memory"]
	not usable(object.get(resources, name, null))
	msg := sprintf("%s must be set to a quantity (e.g. \"4\", \"32Gi\"): it becomes the pod's request and limit", [name])
}

# Set, and a quantity the checks can read (null, "" and garbage are not).
usable(q) if lib.quantity(q)

violation contains {"field": "spec.runtime.resources.cpu", "message": msg} if {
	lib.quantity(resources.cpu) > lib.quantity(data.autoglm.config.max_cpu)
	msg := sprintf("cpu %v exceeds the maximum %v per pod; lower it", [resources.cpu, data.autoglm.config.max_cpu])
}

violation contains {"field": "spec.runtime.resources.memory", "message": msg} if {
	lib.quantity(resources.memory) > lib.quantity(data.autoglm.config.max_memory)
	msg := sprintf("memory %v exceeds the maximum %v per pod; lower it", [resources.memory, data.autoglm.config.max_memory])
}
