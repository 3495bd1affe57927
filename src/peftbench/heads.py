"""The classification head put on encoders: mean pooling over real tokens, then a linear layer.
Mean pooling rather than BERT's pooler because sentence encoders such as all-MiniLM-L6-v2 were trained
for it and ship an untrained pooler; the head is trained by every method."""

import torch
from torch import nn


class MeanPoolClassifier(nn.Module):
    def __init__(self, backbone: nn.Module, hidden_size: int, num_labels: int):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(hidden_size, num_labels)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        # Prompt tuning prepends virtual tokens; pool over the real tokens, which are the last positions.
        hidden = hidden[:, -input_ids.shape[1]:]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
        return self.head(pooled)
