"""The gateway's policy per BizType over every backend's answer (`MODERATION_POLICY_FILE`): thresholds,
keyword lists, detectors and image lists, each answer saying which rule decided it."""
