"""EVA-02 masked image modeling: the student, CLIP teachers, masking, loss and the training loop."""

from .engine import build_models, default_num_mask_patches, train
from .init import released_init
from .loss import neg_cosine_loss
from .masking import BlockMaskGenerator
from .recipes import RECIPES, PretrainConfig, recipe_config
from .student import MIMStudent
from .teacher import TEACHERS, CLIPTeacher, TeacherError, build_teacher

__all__ = [
    "RECIPES",
    "TEACHERS",
    "BlockMaskGenerator",
    "CLIPTeacher",
    "MIMStudent",
    "PretrainConfig",
    "TeacherError",
    "build_models",
    "build_teacher",
    "default_num_mask_patches",
    "neg_cosine_loss",
    "recipe_config",
    "released_init",
    "train",
]
