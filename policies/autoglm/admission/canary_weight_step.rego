# In production namespaces the canary's weight moves by at most max_weight_step points per edit,
# counted from the weight last served (status.traffic.effectiveCanaryWeight: what the data plane
# accepted), so removing and re-adding the canary, or creating a resource, cannot jump it.
package autoglm.admission.canary_weight_step

import data.autoglm.admission.lib

max_step := object.get(data.autoglm.config, "max_weight_step", 25)

# What clients were getting before this request: 0 for a new resource or one without a canary.
served := w if {
	input.old_object.spec.canary
	traffic := object.get(input.old_object, ["status", "traffic"], {})
	w := object.get(traffic, "effectiveCanaryWeight", object.get(input.old_object.spec.canary, "weight", 0))
} else := 0

violation contains {"field": "spec.canary.weight", "message": msg} if {
	input.operation in {"CREATE", "UPDATE"}
	lib.is_production
	lib.spec.canary
	count(object.get(lib.spec.canary, "steps", [])) == 0 # a gray-release walk moves the weight itself, step by step
	new := object.get(lib.spec.canary, "weight", 0)
	step := abs(new - served)
	step > max_step
	msg := sprintf("moves the canary weight from %d%% (last served) to %d%% (%d points) in a production namespace; change it by at most %d points per edit, or set spec.canary.steps", [served, new, step, max_step])
}
