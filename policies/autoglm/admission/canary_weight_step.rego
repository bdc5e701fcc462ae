# In production namespaces the canary's weight moves by at most max_weight_step points at a time,
# whatever path it takes: an edit of spec.canary.weight is counted from the weight last served
# (status.traffic.effectiveCanaryWeight: what the data plane accepted), so removing and re-adding
# the canary, creating a resource, or a retry after a rollback (0 % served) cannot jump it; and a
# gray-release walk (spec.canary.steps) is judged step by step, from the weight served through
# each step to spec.canary.weight, each step baking at least min_bake_seconds.
package autoglm.admission.canary_weight_step

import data.autoglm.admission.lib

max_step := object.get(data.autoglm.config, "max_weight_step", 25)

min_bake := object.get(data.autoglm.config, "min_bake_seconds", 30)

# What clients were getting before this request: 0 for a new resource or one without a canary.
served := w if {
	input.old_object.spec.canary
	traffic := object.get(input.old_object, ["status", "traffic"], {})
	w := object.get(traffic, "effectiveCanaryWeight", object.get(input.old_object.spec.canary, "weight", 0))
} else := 0

steps := object.get(lib.spec.canary, "steps", [])

final := object.get(lib.spec.canary, "weight", 0)

judged if {
	input.operation in {"CREATE", "UPDATE"}
	lib.is_production
	lib.spec.canary
}

# An edit without a walk: from what was served straight to the weight.
violation contains {"field": "spec.canary.weight", "message": msg} if {
	judged
	count(steps) == 0
	step := abs(final - served)
	step > max_step
	msg := sprintf("moves the canary weight from %d%% (last served) to %d%% (%d points) in a production namespace; change it by at most %d points per edit, or set spec.canary.steps", [served, final, step, max_step])
}

# A walk: the weights it goes through, from what was served, each step no larger than an edit.
path := array.concat(array.concat([served], [s.weight | some s in steps]), [final])

violation contains {"field": field, "message": msg} if {
	judged
	count(steps) > 0
	some i in numbers.range(1, count(path) - 1)
	step := abs(path[i] - path[i - 1])
	step > max_step
	field := step_field(i)
	msg := sprintf("moves the canary weight from %d%% to %d%% (%d points) in one step of the walk in a production namespace; add steps so that none moves more than %d points", [path[i - 1], path[i], step, max_step])
}

step_field(i) := sprintf("spec.canary.steps[%d].weight", [i - 1]) if i <= count(steps)

step_field(i) := "spec.canary.weight" if i > count(steps)

violation contains {"field": sprintf("spec.canary.steps[%d].bakeSeconds", [i]), "message": msg} if {
	judged
	some i, s in steps
	bake := object.get(s, "bakeSeconds", 60)
	bake < min_bake
	msg := sprintf("bakes %d s in a production namespace; each step must bake at least %d s on a live canary before the next", [bake, min_bake])
}
