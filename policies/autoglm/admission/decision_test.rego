package autoglm.admission_test

import data.autoglm.admission

good := {
	"operation": "CREATE",
	"namespace": {"name": "ml", "labels": {}},
	"namespace_usage": {"gpus": 0},
	"object": {"spec": {
		"model": {
			"name": "m", "repository": {"uri": "pvc://store/triton"}, "version": 1, "format": "tensorrt_plan",
			"engines": [{"computeCapability": "9.0", "file": "a.plan", "tensorrtVersion": "10.3"}],
		},
		"runtime": {
			"image": "nvcr.io/nvidia/tritonserver:24.08-py3", "replicas": 2,
			"resources": {"gpus": 1, "cpu": "4", "memory": "32Gi"},
		},
		"placement": {"target": "cloud"},
	}},
}

with_spec(path, value) := json.patch(good, [{"op": "add", "path": concat("/", array.concat(["", "object", "spec"], path)), "value": value}])

denied_by(inp, id) if {
	d := admission.decision with input as inp
	not d.allowed
	some m in d.denials
	startswith(m, sprintf("[%s]", [id]))
}

test_good_is_allowed_without_warnings if {
	d := admission.decision with input as good
	d.allowed
	d.denials == []
	d.warnings == []
}

test_registry_and_latest if {
	denied_by(with_spec(["runtime", "image"], "docker.io/evil/triton:1"), "allowed-registries")
	denied_by(with_spec(["runtime", "image"], "nvcr.io/nvidia/tritonserver:latest"), "allowed-registries")
	denied_by(with_spec(["runtime", "image"], "nvcr.io/nvidia/tritonserver"), "allowed-registries")
	d := admission.decision with input as with_spec(["runtime", "image"], "nvcr.io/nvidia/tritonserver@sha256:abc")
	d.allowed
}

test_the_platforms_copy_images_are_judged_like_the_tenants if {
	field := "spec.model.repository.uri (copied by the platform's image, chart value modelSource.s3Image)"
	outside := json.patch(good, [{"op": "add", "path": "/platform_images", "value": [{"field": field,
		"image": "amazon/aws-cli:2.17.0@sha256:643507c10ada7964ca6157b3d799f030b90577643da9955d319a77399ed80d73"}]}])
	d := admission.decision with input as outside
	some m in d.denials
	startswith(m, sprintf("[allowed-registries] %s", [field]))
	mirrored := json.patch(good, [{"op": "add", "path": "/platform_images", "value": [{"field": field,
		"image": "registry.autoglm.internal/aws-cli:2.17.0@sha256:643507c10ada7964ca6157b3d799f030b90577643da9955d319a77399ed80d73"}]}])
	allowed := admission.decision with input as mirrored
	allowed.allowed
}

test_registry_port_is_not_a_tag if {
	inp := with_spec(["runtime", "image"], "registry.autoglm.internal:5000/triton")
	d := admission.decision with input as inp
	some m in d.denials
	contains(m, "has no tag")
}

test_gpu_quota_per_resource_and_namespace if {
	denied_by(with_spec(["runtime", "replicas"], 20), "gpu-quota")
	inp := json.patch(good, [{"op": "replace", "path": "/namespace_usage/gpus", "value": 31}])
	denied_by(inp, "gpu-quota")
	d := admission.decision with input as json.patch(good, [{"op": "replace", "path": "/namespace_usage/gpus", "value": 30}])
	d.allowed
}

test_gpu_products if {
	denied_by(with_spec(["placement", "allowedGpuProducts"], ["NVIDIA-GeForce-RTX-4090"]), "allowed-gpu-products")
	inp := with_spec(["model", "engines"], [{"computeCapability": "9.0", "file": "a", "tensorrtVersion": "10", "gpuProducts": ["Tesla-K80"]}])
	denied_by(inp, "allowed-gpu-products")
}

test_resource_limits if {
	denied_by(with_spec(["runtime", "resources"], {"gpus": 1, "cpu": "4"}), "resource-limits")
	denied_by(with_spec(["runtime", "resources"], {"gpus": 1, "cpu": "4", "memory": "2Ti"}), "resource-limits")
	denied_by(with_spec(["runtime", "resources"], {"gpus": 1, "cpu": "65000m", "memory": "1Gi"}), "resource-limits")
	d := admission.decision with input as with_spec(["runtime", "resources"], {"gpus": 1, "cpu": "500m", "memory": "512Mi"})
	d.allowed
}

test_repository_schemes_per_namespace if {
	inp := with_spec(["model", "repository", "uri"], "s3://bucket/m")
	d := admission.decision with input as inp with data.autoglm.config.allowed_uri_schemes as {"*": ["pvc"], "other": ["s3"]}
	not d.allowed
	d2 := admission.decision with input as json.patch(inp, [{"op": "replace", "path": "/namespace/name", "value": "other"}])
		with data.autoglm.config.allowed_uri_schemes as {"*": ["pvc"], "other": ["s3"]}
	d2.allowed
}

production(inp) := json.patch(inp, [{"op": "replace", "path": "/namespace/labels", "value": {"serving.autoglm.io/environment": "production"}}])

test_canary_weight_step_only_in_production if {
	new := json.patch(with_spec(["canary"], {"version": 2, "weight": 50}), [{"op": "replace", "path": "/operation", "value": "UPDATE"}])
	upd := json.patch(new, [{"op": "add", "path": "/old_object", "value": {"spec": {"canary": {"version": 2, "weight": 10}}}}])
	denied_by(production(upd), "canary-weight-step")
	d := admission.decision with input as upd
	d.allowed
	small := json.patch(upd, [{"op": "replace", "path": "/old_object/spec/canary/weight", "value": 30}])
	d2 := admission.decision with input as production(small)
	d2.allowed
}

test_production_rollback if {
	inp := json.patch(with_spec(["canary"], {"version": 2, "weight": 10}), [{"op": "add", "path": "/object/spec/rollback", "value": {"enabled": false}}])
	denied_by(production(inp), "production-rollback")
	d := admission.decision with input as inp
	d.allowed
}

test_edge_fit if {
	edge := with_spec(["placement"], {"target": "edge"})
	denied_by(edge, "edge-fit") # 32Gi and an engine for 9.0 only
	ok := json.patch(edge, [
		{"op": "replace", "path": "/object/spec/model/engines", "value": [{"computeCapability": "8.7", "file": "o.plan", "tensorrtVersion": "10"}]},
		{"op": "replace", "path": "/object/spec/runtime/resources/memory", "value": "4Gi"},
	])
	d := admission.decision with input as ok
	d.allowed
}

test_built_engines_need_no_engine_list_and_their_builder_image_is_checked if {
	built := json.patch(good, [
		{"op": "remove", "path": "/object/spec/model/engines"},
		{"op": "add", "path": "/object/spec/model/build", "value": {"checkpoint": {"uri": "pvc://store/ckpt"}, "precision": "fp16"}},
		{"op": "replace", "path": "/object/spec/runtime/resources/memory", "value": "4Gi"},
		{"op": "add", "path": "/object/spec/placement/target", "value": "edge"},
	])
	d := admission.decision with input as built
	d.allowed
	denied_by(json.patch(built, [{"op": "add", "path": "/object/spec/model/build/image", "value": "docker.io/evil/builder:1"}]), "allowed-registries")
	denied_by(json.patch(built, [{"op": "add", "path": "/object/spec/model/build/image", "value": "nvcr.io/nvidia/builder:latest"}]), "allowed-registries")
}

test_warn_and_dryrun_modes if {
	inp := with_spec(["model", "engines"], [{"computeCapability": "9.0", "file": "a.plan"}])
	d := admission.decision with input as inp
	d.allowed
	count(d.warnings) == 1
	startswith(d.warnings[0], "[engine-provenance] spec.model.engines[0].tensorrtVersion")
	bad := with_spec(["runtime", "image"], "nvcr.io/nvidia/tritonserver:latest")
	d2 := admission.decision with input as bad with data.autoglm.config.enforcement as {"allowed-registries": "dryrun"}
	d2.allowed
	count(d2.dryrun) == 1
	d3 := admission.decision with input as bad with data.autoglm.config.enforcement as {"allowed-registries": "warn"}
	d3.allowed
	count(d3.warnings) == 1
}

test_quantities if {
	data.autoglm.admission.lib.quantity("8Gi") == 8589934592
	abs(data.autoglm.admission.lib.quantity("500m") - 0.5) < 0.000001
	data.autoglm.admission.lib.quantity(4) == 4
}

test_removing_or_promoting_a_canary_is_not_a_weight_step if {
	old := {"spec": {"canary": {"version": 2, "weight": 100}}}
	upd := json.patch(good, [
		{"op": "replace", "path": "/operation", "value": "UPDATE"},
		{"op": "add", "path": "/old_object", "value": old},
	])
	d := admission.decision with input as production(upd)
	d.allowed
}

test_empty_or_unparsable_quantities_are_refused if {
	denied_by(with_spec(["runtime", "resources"], {"gpus": 1, "cpu": "4", "memory": ""}), "resource-limits")
	denied_by(with_spec(["runtime", "resources"], {"gpus": 1, "cpu": null, "memory": "1Gi"}), "resource-limits")
	denied_by(with_spec(["runtime", "resources"], {"gpus": 1, "cpu": "lots", "memory": "1Gi"}), "resource-limits")
}

test_without_data_policies_still_deny if {
	bad := with_spec(["runtime", "image"], "nvcr.io/nvidia/tritonserver:latest")
	d := admission.decision with input as bad with data.autoglm.config.enforcement as {}
		with data.autoglm.config.enforcement_default as null
	not d.allowed
}

test_oci_model_images_latest_in_any_case_and_digest_pinning if {
	denied_by(with_spec(["model", "repository"], {"uri": "oci://docker.io/evil/model:1"}), "allowed-registries")
	denied_by(with_spec(["model", "repository"], {"uri": "oci://nvcr.io/nvidia/model:Latest"}), "allowed-registries")
	denied_by(with_spec(["runtime", "image"], "nvcr.io/nvidia/tritonserver:LATEST"), "allowed-registries")
	d := admission.decision with input as with_spec(["model", "repository"], {"uri": "oci://nvcr.io/nvidia/model:1.2"})
	d.allowed
	pinned := with_spec(["runtime", "image"], "nvcr.io/nvidia/tritonserver@sha256:abc")
	denied_by(good, "allowed-registries") with data.autoglm.config.require_digest as true
	d2 := admission.decision with input as pinned with data.autoglm.config.require_digest as true
	d2.allowed
}

test_the_weight_step_counts_from_the_weight_last_served if {
	# created at 100 in production: a jump from nothing
	denied_by(production(with_spec(["canary"], {"version": 2, "weight": 100})), "canary-weight-step")

	# removed and re-added: the old object served no canary
	readd := json.patch(production(with_spec(["canary"], {"version": 2, "weight": 60})), [
		{"op": "replace", "path": "/operation", "value": "UPDATE"},
		{"op": "add", "path": "/old_object", "value": {"spec": {}}},
	])
	denied_by(readd, "canary-weight-step")

	# rolled back: 0 was served, whatever spec said
	rolled := json.patch(readd, [{"op": "replace", "path": "/old_object", "value": {
		"spec": {"canary": {"version": 2, "weight": 50}},
		"status": {"traffic": {"effectiveCanaryWeight": 0}},
	}}])
	denied_by(rolled, "canary-weight-step")

	# a walk is judged step by step: from 0 through each step to the final weight, each baked
	walk := production(with_spec(["canary"], {"version": 2, "weight": 100, "steps": [
		{"weight": 10}, {"weight": 35}, {"weight": 60}, {"weight": 80},
	]}))
	d := admission.decision with input as walk
	d.allowed
}

test_a_walk_cannot_dodge_the_weight_step if {
	# any steps list used to exempt the weight: one step of 1 %, baked 0 s, reached 100 % at once
	dodge := production(with_spec(["canary"], {"version": 2, "weight": 100, "steps": [{"weight": 1, "bakeSeconds": 0}]}))
	denied_by(dodge, "canary-weight-step")
	d := admission.decision with input as dodge
	some m1 in d.denials
	contains(m1, "spec.canary.weight: moves the canary weight from 1% to 100%")
	some m2 in d.denials
	contains(m2, "spec.canary.steps[0].bakeSeconds: bakes 0 s")

	# a first step too far from what is served
	far := production(with_spec(["canary"], {"version": 2, "weight": 40, "steps": [{"weight": 40}]}))
	denied_by(far, "canary-weight-step")
	d2 := admission.decision with input as far
	some m3 in d2.denials
	contains(m3, "spec.canary.steps[0].weight: moves the canary weight from 0% to 40%")

	# outside production a walk is the user's own business
	d3 := admission.decision with input as with_spec(["canary"], {"version": 2, "weight": 100, "steps": [{"weight": 1, "bakeSeconds": 0}]})
	d3.allowed
}
