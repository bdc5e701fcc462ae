# Engines should record the TensorRT version they were built with (warn by default):
# a plan built by another TensorRT version fails to deserialize at load time.
package autoglm.admission.engine_provenance

import data.autoglm.admission.lib

violation contains {"field": field, "message": msg} if {
	some path in [["model", "engines"], ["canary", "engines"]]
	some i, engine in object.get(lib.spec, path, [])
	not engine.tensorrtVersion
	field := sprintf("spec.%s.%s[%d].tensorrtVersion", [path[0], path[1], i])
	msg := sprintf("engine %s records no TensorRT version; set tensorrtVersion so a mismatch with the runtime image is caught before pods crash", [engine.file])
}
