"""What every task that trains Switch models adds to fairseq's FairseqTask."""

from ..models.student_init import init_student_from
from ..models.switch_transformer import dummy_batch_routing


class SwitchTaskMixin:
    """Put before the fairseq task class: `class MyTask(SwitchTaskMixin, FairseqTask)`."""

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False, **kwargs):
        # fairseq marks a dummy batch (this rank ran out of data) only through ignore_grad
        with dummy_batch_routing(model, ignore_grad):
            return super().train_step(sample, model, criterion, optimizer, update_num, ignore_grad, **kwargs)

    def build_model(self, cfg, from_checkpoint=False):
        model = super().build_model(cfg, from_checkpoint)
        path = getattr(cfg, "student_init_from", None)
        # before fairseq restores checkpoint_last (a resumed run keeps its weights); never when a
        # trained model is rebuilt from its checkpoint (fairseq-generate, teachers)
        if path and not from_checkpoint:
            init_student_from(model, path, self.target_dictionary, str(getattr(cfg, "student_ffn_init", "random")),
                              int(getattr(cfg, "student_ffn_expert", 0) or 0))
        return model
