"""The ViLT backbone (Kim et al. 2021) in plain PyTorch.

One pre-norm transformer reads a single sequence: BERT text embeddings of ``[CLS] words
[SEP]`` followed by an image [CLS] token and the image's patches (a Conv2d patch projection
plus patch position embeddings), each part given its modality-type embedding (0 text, 1
image). Module and parameter names are those of HF transformers' ``ViltModel``
(``embeddings.patch_embeddings.projection``, ``encoder.layer.N.attention.attention.query``,
``layernorm``, ``pooler.dense``, ...), so its checkpoints load key for key. The text
embeddings (BERT's), the encoder layers (ViT blocks) and the pooler are shared parts
(``models/common/layers.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vlbench.engine.backbone import BackboneOutput

from ..common.checkpoint import LoadReport
from ..common.init import init_bert_weights
from ..common.layers import (
    BertTextEmbeddings,
    Pooler,
    PreNormEncoder,
    additive_attention_mask,
    compute_dtype,
)
from .config import ViltConfig
from .timm_vit import init_from_config

#: modality-type ids: text, and the first image (a second image of an example takes 2)
TEXT_MODALITY = 0
IMAGE_MODALITY = 1


class ViltPatchEmbeddings(nn.Module):
    """Image to patches: a Conv2d with kernel and stride ``patch_size`` (HF's ``projection``)."""

    def __init__(self, config: ViltConfig):
        super().__init__()
        self.num_channels = config.num_channels
        self.projection = nn.Conv2d(config.num_channels, config.hidden_size,
                                    kernel_size=config.patch_size, stride=config.patch_size)

    def forward(self, pixel_values: Tensor) -> Tensor:
        """(B, C, H, W) pixels -> (B, hidden, H // patch, W // patch) patch features."""
        if pixel_values.shape[1] != self.num_channels:
            raise ValueError(f"pixel_values have {pixel_values.shape[1]} channels; this ViLT "
                             f"reads {self.num_channels} (num_channels)")
        return self.projection(pixel_values.to(self.projection.weight.dtype))


def select_patches(valid: Tensor, sample_length: int = -1) -> Tensor:
    """Which patches each image puts in the sequence: (B, L) indices into its N patches.

    ``sample_length`` -1: every image contributes ``L`` = the most valid patches an image of
    the batch has, its valid patches first in raster order and, when it has fewer than L, its
    first invalid (masked) patches after them. ``sample_length`` > 0 (HF's patch sampling,
    ``max_image_length``): ``L = min(that most, sample_length)``; an image with at least L
    valid patches keeps L of them drawn uniformly without replacement, in random order, and an
    image with fewer keeps all of them in raster order followed by invalid patches drawn
    uniformly with replacement: the distribution of HF's ``ViltEmbeddings.visual_embed``.
    """
    batch, patches = valid.shape
    counts = valid.sum(1)
    longest = int(counts.max()) if batch else 0
    raster = torch.arange(patches, device=valid.device)
    # valid patches first, then invalid ones, each in raster order
    order = torch.argsort(torch.where(valid, raster, raster + patches), dim=1)
    if sample_length < 0:
        return order[:, :longest]
    length = min(longest, sample_length)
    keys = torch.where(valid, torch.rand(valid.shape, device=valid.device), 2.0)
    drawn = torch.argsort(keys, dim=1)[:, :length]  # random valid patches in random order
    invalid = patches - counts
    slot = torch.arange(length, device=valid.device)
    pick = (torch.rand((batch, length), device=valid.device) * invalid[:, None]).long()
    padding = order.gather(1, (counts[:, None] + pick).clamp(max=patches - 1))
    short = torch.where(slot < counts[:, None], order[:, :length], padding)
    return torch.where((counts >= length)[:, None], drawn, short)


class ViltEmbeddings(nn.Module):
    """Text embeddings, then the image [CLS] token and its patches with position embeddings
    interpolated to each image's valid size; modality-type embeddings added to both."""

    def __init__(self, config: ViltConfig):
        super().__init__()
        self.config = config
        self.text_embeddings = BertTextEmbeddings(config)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.patch_embeddings = ViltPatchEmbeddings(config)
        self.position_embeddings = nn.Parameter(
            torch.zeros(1, config.grid_size ** 2 + 1, config.hidden_size))
        self.token_type_embeddings = nn.Embedding(config.modality_type_vocab_size,
                                                  config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def patch_positions(self, heights: Tensor, widths: Tensor, grid: tuple[int, int]) -> Tensor:
        """(B, hidden, gh, gw) position embeddings: the table's grid resized (bilinear, corners
        aligned) to each image's valid ``height x width`` patches, zero beyond them (HF's)."""
        table = self.position_embeddings[:, 1:, :].transpose(1, 2)
        table = table.reshape(1, -1, self.config.grid_size, self.config.grid_size)
        resized: dict[tuple[int, int], Tensor] = {}  # images of one size share the resize
        rows = []
        for h, w in zip(heights.tolist(), widths.tolist(), strict=True):
            if (h, w) not in resized:
                if h == 0 or w == 0:  # no valid patch: nothing to place
                    resized[(h, w)] = table.new_zeros((1, table.shape[1], *grid))
                else:
                    sized = F.interpolate(table, size=(h, w), mode="bilinear", align_corners=True)
                    resized[(h, w)] = F.pad(sized, (0, grid[1] - w, 0, grid[0] - h))
            rows.append(resized[(h, w)])
        return torch.cat(rows, dim=0)

    def visual_embed(self, pixel_values: Tensor, pixel_mask: Tensor | None,
                     image_modality: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Embed images: (B, 1 + L, H) states, their (B, 1 + L) 1/0 mask and the (B, L) indices
        of the chosen patches in each image's raster order (see :func:`select_patches`)."""
        patches = self.patch_embeddings(pixel_values)
        batch, hidden, gh, gw = patches.shape
        if pixel_mask is None:
            mask = patches.new_ones((batch, gh, gw), dtype=torch.long)
        else:
            # a patch is valid where the nearest pixel of the mask is (HF's downsampling)
            mask = F.interpolate(pixel_mask[:, None].float(), size=(gh, gw))[:, 0].long()
        heights, widths = mask[:, :, 0].sum(1), mask[:, 0, :].sum(1)  # HF's valid extent
        positions = self.patch_positions(heights, widths, (gh, gw))
        # patches are sampled while training only: evaluation sees every patch, always alike
        index = select_patches(mask.flatten(1).bool(),
                               self.config.max_image_length if self.training else -1)
        gather = index[:, :, None].expand(-1, -1, hidden)
        tokens = patches.flatten(2).transpose(1, 2).gather(1, gather)
        positions = positions.flatten(2).transpose(1, 2).gather(1, gather)
        tokens = torch.cat((self.cls_token.expand(batch, -1, -1), tokens), dim=1)
        positions = torch.cat(
            (self.position_embeddings[:, :1].expand(batch, -1, -1), positions), dim=1)
        image = self.dropout(tokens + positions)
        image = image + self.token_type_embeddings(image_modality)[:, None, :]
        image_mask = torch.cat((mask.new_ones((batch, 1)), mask.flatten(1).gather(1, index)), 1)
        return image, image_mask, index

    def forward(self, input_ids: Tensor, token_type_ids: Tensor | None, pixel_values: Tensor,
                pixel_mask: Tensor | None, image_modality: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(B, T + 1 + L, H) embedded sequence, the (B, 1 + L) image mask and patch indices."""
        text = self.text_embeddings(input_ids, token_type_ids)
        text = text + self.token_type_embeddings.weight[TEXT_MODALITY]
        image, image_mask, index = self.visual_embed(pixel_values, pixel_mask, image_modality)
        return torch.cat((text, image), dim=1), image_mask, index


class ViltModel(nn.Module):
    """The ViLT backbone: joint embeddings, pre-norm encoder, final LayerNorm, [CLS] pooler.

    ``state_dict()`` keys are identical to those of ``transformers.ViltModel``. The final
    sequence is split as the backbone protocol asks: ``language`` = the T text positions,
    ``vision`` = the image positions in HF's order (the image [CLS] token first, then the
    patches: every valid patch in raster order, then masked padding patches up to the batch's
    largest image; a random subset of ``max_image_length`` patches while training when that
    is set), ``pooled`` = ``tanh(W h + b)`` of the text [CLS] after the final LayerNorm.

    A config naming ``init_vit`` starts the trunk of a freshly built backbone from that timm
    ViT state dict (see ``models/vilt/timm_vit.py``); what the load found is kept as
    ``vit_init_report``. The file is read again whenever a backbone is built from such a
    config (a checkpoint's weights then replace it); where it has gone, a warning says so and
    the random trunk stays (new runs check the file up front in ``fit_to_data``).
    """

    config_class = ViltConfig

    def __init__(self, config: ViltConfig):
        super().__init__()
        config.validate()  # fields may have been set since construction (fit_to_data)
        self.config = config
        self.embeddings = ViltEmbeddings(config)
        self.encoder = PreNormEncoder(config, config.num_hidden_layers, config.qkv_bias)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.pooler = Pooler(config)
        self.vit_init_report: LoadReport | None = None
        self.init_weights()
        if config.init_vit and self.layernorm.weight.device.type != "meta":
            self.vit_init_report = init_from_config(self)  # not on meta: shape checks only

    def init_weights(self) -> None:
        """(Re-)initialise every parameter: BERT's normal(0, initializer_range) for linear,
        convolution and embedding weights, and a truncated normal for the image [CLS] token
        and patch positions (timm's ViT, which ViLT starts from)."""
        std = self.config.initializer_range
        self.apply(lambda m: init_bert_weights(m, std))
        projection = self.embeddings.patch_embeddings.projection
        nn.init.normal_(projection.weight, std=std)
        nn.init.zeros_(projection.bias)
        nn.init.trunc_normal_(self.embeddings.cls_token, std=std)
        nn.init.trunc_normal_(self.embeddings.position_embeddings, std=std)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.text_embeddings.word_embeddings

    def image_modalities(self, rows: int, image_token_type_idx: int | Tensor | None,
                         device: torch.device) -> Tensor:
        """(rows,) modality-type id of each row's image.

        ``image_token_type_idx`` (HF's name) as given; otherwise, with ``num_images`` > 1, rows
        are read as groups of that many adjacent rows (vlbench's NLVR2 layout: (sentence,
        image0), (sentence, image1), ...) and row i of a group takes modality i + 1, as HF's
        ``ViltForImagesAndTextClassification`` gives its images; else every image takes 1.
        """
        if image_token_type_idx is not None:
            ids = torch.as_tensor(image_token_type_idx, dtype=torch.long, device=device)
            return ids.expand(rows)
        per_example = self.config.images_per_example
        if rows % per_example:
            raise ValueError(f"{rows} rows do not split into examples of num_images "
                             f"{per_example} adjacent rows")
        return torch.arange(rows, device=device) % per_example + IMAGE_MODALITY

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        pixel_values: Tensor | None = None,
        pixel_mask: Tensor | None = None,
        visual_feats: Tensor | None = None,
        visual_pos: Tensor | None = None,
        visual_attention_mask: Tensor | None = None,
        image_token_type_idx: int | Tensor | None = None,
    ) -> BackboneOutput:
        """Encode a batch of (text, image) rows.

        Args:
            input_ids: (B, T) WordPiece ids (``[CLS] words [SEP]``).
            attention_mask: (B, T), 1 for real tokens, 0 for padding.
            token_type_ids: (B, T) segment ids (all 0 when omitted).
            pixel_values: (B, num_channels, H, W) images, normalised as the weights expect.
            pixel_mask: (B, H, W), 1 for real pixels, 0 for padding (all real when omitted).
            visual_feats, visual_pos, visual_attention_mask: the region inputs of the backbone
                protocol; ViLT reads images, so they must be None.
            image_token_type_idx: modality-type id of the images, one for all rows or (B,)
                (default: see :meth:`image_modalities`).
        """
        if visual_feats is not None or visual_pos is not None or visual_attention_mask is not None:
            raise ValueError("ViLT reads images (pixel_values, pixel_mask), not region features "
                             "(visual_feats, visual_pos)")
        if pixel_values is None:
            raise ValueError("ViltModel needs pixel_values")
        tokens = input_ids.shape[1]
        modality = self.image_modalities(input_ids.shape[0], image_token_type_idx,
                                         input_ids.device)
        hidden, image_mask, _ = self.embeddings(input_ids, token_type_ids, pixel_values,
                                                pixel_mask, modality)
        text_mask = (attention_mask.long() if attention_mask is not None
                     else input_ids.new_ones(input_ids.shape))
        mask = additive_attention_mask(torch.cat((text_mask, image_mask.to(text_mask)), dim=1),
                                       compute_dtype(hidden))
        hidden = self.layernorm(self.encoder(hidden, mask))
        return BackboneOutput(language=hidden[:, :tokens], vision=hidden[:, tokens:],
                              pooled=self.pooler(hidden))
