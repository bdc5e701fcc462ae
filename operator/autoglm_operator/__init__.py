"""AutoGLM Operator: serves large models on NVIDIA Triton from one AutoGLMDeployment resource."""
