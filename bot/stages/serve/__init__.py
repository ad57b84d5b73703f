"""The fastest measured way to serve each model in vLLM: plan (which configurations apply to its format on this
GPU), run (one engine per configuration, through the serve interpreter's worker), choose (only what the uncertainty
separates from the defaults), and the batch-1 bandwidth limit. The card's "Serve it fastest" part reads the record.
"""
