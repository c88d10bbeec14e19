"""Generation engines behind one interface (`base.Engine`): vLLM in-process, transformers, and
any OpenAI-compatible completions endpoint. `factory.get_engine` picks one from the config.
"""
