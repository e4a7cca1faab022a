"""Typed run configs: YAML files loaded into frozen pydantic models that reject unknown keys.

`schema` holds the models (sections and task configs, sharing their bases); `load` reads,
overrides, validates and saves them; `recipes` finds the shipped recipes by name and resolves
`base:` chains; `reference` generates docs/CONFIG.md from the models.
"""

from .load import (
    apply_overrides,
    config_class,
    load_config,
    parse_override,
    save_config,
    to_plain,
    validate,
)
from .recipes import (
    Recipe,
    find_recipe,
    list_recipes,
    merge,
    read_config,
    read_yaml,
    recipes_root,
    resolve_config,
)
from .schema import (
    TASKS,
    AdamWConfig,
    BudgetConfig,
    ClassifierConfig,
    CNNConfig,
    DataConfig,
    DataOnlyConfig,
    EvalConfig,
    FinetuneConfig,
    FinetuneOptimConfig,
    HCMLConfig,
    HCMLModelConfig,
    HCMLOptimConfig,
    HCMLPhasesConfig,
    MixupConfig,
    ModelConfig,
    OptimConfig,
    PlanConfig,
    PretrainConfig,
    RunConfig,
    SearchConfig,
    Section,
    StageConfig,
    TaskConfig,
    TrainConfig,
    ViTConfig,
)

__all__ = [
    "TASKS", "AdamWConfig", "BudgetConfig", "CNNConfig",
    "ClassifierConfig", "DataConfig", "DataOnlyConfig", "EvalConfig", "FinetuneConfig",
    "FinetuneOptimConfig", "HCMLConfig", "HCMLModelConfig", "HCMLOptimConfig",
    "HCMLPhasesConfig", "MixupConfig", "ModelConfig", "OptimConfig", "PlanConfig",
    "PretrainConfig", "RunConfig", "SearchConfig", "Section", "StageConfig", "TaskConfig",
    "TrainConfig", "ViTConfig", "apply_overrides", "config_class", "load_config",
    "parse_override", "read_yaml", "save_config", "to_plain", "validate",
    "Recipe", "find_recipe", "list_recipes", "merge", "read_config", "recipes_root",
    "resolve_config",
]
