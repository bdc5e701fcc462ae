# GPU products named by the resource must be ones the platform runs.
package autoglm.admission.allowed_gpu_products

import data.autoglm.admission.lib

allowed := {p | some p in data.autoglm.config.allowed_gpu_products}

violation contains {"field": "spec.placement.allowedGpuProducts", "message": msg} if {
	some i, product in object.get(lib.spec, ["placement", "allowedGpuProducts"], [])
	not allowed[product]
	msg := sprintf("[%d] %q is not a GPU product this platform runs; use one of %s", [i, product, concat(", ", sort(allowed))])
}

violation contains {"field": field, "message": msg} if {
	some path in [["model", "engines"], ["canary", "engines"]]
	some i, engine in object.get(lib.spec, path, [])
	some product in object.get(engine, "gpuProducts", [])
	not allowed[product]
	field := sprintf("spec.%s.%s[%d].gpuProducts", [path[0], path[1], i])
	msg := sprintf("%q is not a GPU product this platform runs; use one of %s", [product, concat(", ", sort(allowed))])
}
