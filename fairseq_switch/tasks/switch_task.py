"""What every task that trains Switch models adds to fairseq's FairseqTask."""

from ..models.switch_transformer import dummy_batch_routing


class SwitchTaskMixin:
    """Put before the fairseq task class: `class MyTask(SwitchTaskMixin, FairseqTask)`."""

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False, **kwargs):
        # fairseq marks a dummy batch (this rank ran out of data) only through ignore_grad
        with dummy_batch_routing(model, ignore_grad):
            return super().train_step(sample, model, criterion, optimizer, update_num, ignore_grad, **kwargs)
