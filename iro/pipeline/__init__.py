"""The integration layer: IRO's stages, the pipeline that binds them to the store, the decoder
over every method, and the evaluation table. Built on iro.core, reward/ and valuefn/; no Prefect.
"""
