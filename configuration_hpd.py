"""Configuration of an HPD sentence encoder: a BERT-family encoder plus the HPD embedding head.

HPD (Homomorphic Projective Distillation, Zhao et al., Findings of ACL 2022) trains a small encoder
with pooling and a learnable head, `Dense(hidden -> embedding_dim) + tanh`, to mimic a large
teacher's PCA-projected sentence embeddings. This file ships to the Hub as remote code next to
`modeling_hpd.py`, so it depends on transformers only.

Names: the student's Dense + activation is the *head*; its stored names keep the published checkpoints'
spelling (weights `projection.*`, keys `projection_activation`, `projection_bias`), while *projection* alone
means the teacher's PCA map (`hpd distill --projection`). `embedding_dim` is the size of the sentence
embedding (the head's output; None: no head, the pooled vector); `projection_dim` is that size in every case,
under the name sentence-transformers reads; the command line spells it `--dim`.
"""

from transformers import BertConfig

POOLING_MODES = ("mean", "cls", "max")
PROJECTION_ACTIVATIONS = ("tanh", "identity")


class TruncationWarning(UserWarning):
    """Embeddings truncated to a size the model was not trained for (allowed, but expect lower quality)."""


class HPDConfig(BertConfig):
    r"""
    Every `BertConfig` argument (vocab_size, hidden_size, num_hidden_layers, ...) plus the head:

    Args:
        pooling (`str`, defaults to `"mean"`):
            How token states become one vector: `"mean"` (over non-padding tokens), `"cls"` (first token)
            or `"max"` (element-wise over non-padding tokens).
        embedding_dim (`int` or `None`, defaults to 128):
            Output size of the head. `None` means no head: the pooled vector is
            the embedding, as in plain sentence-transformers models such as all-MiniLM-L6-v2.
        projection_activation (`str`, defaults to `"tanh"`):
            Activation after the head's Dense layer: `"tanh"` (HPD) or `"identity"`.
        projection_bias (`bool`, defaults to `True`):
            Whether the head's Dense layer has a bias.
        normalize (`bool`, defaults to `False`):
            L2-normalise the output. Off in the published HPD models.
        max_seq_length (`int`, *optional*):
            Inputs are truncated to this many tokens. Defaults to `max_position_embeddings`.
        matryoshka_dims (`list[int]`, *optional*):
            The sizes the model was trained to be truncated to (Matryoshka HPD), largest first, e.g.
            `[128, 64, 32]`: the first k coordinates of the embedding are a k-d embedding. `None` (the default,
            and every model trained otherwise): only the full size was trained.
    """

    model_type = "hpd"

    def __init__(
        self,
        pooling="mean",
        embedding_dim=128,
        projection_activation="tanh",
        projection_bias=True,
        normalize=False,
        max_seq_length=None,
        matryoshka_dims=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.pooling = pooling
        self.embedding_dim = embedding_dim
        self.projection_activation = projection_activation
        self.projection_bias = projection_bias
        self.normalize = normalize
        self.max_seq_length = self.max_position_embeddings if max_seq_length is None else max_seq_length
        self.matryoshka_dims = list(matryoshka_dims) if isinstance(matryoshka_dims, tuple) else matryoshka_dims
        self._validate_head()

    def _validate_head(self):
        if self.pooling not in POOLING_MODES:
            raise ValueError(f"HPDConfig.pooling must be one of {', '.join(POOLING_MODES)}; got {self.pooling!r}.")
        if self.embedding_dim is not None and not _is_positive_int(self.embedding_dim):
            raise ValueError(
                f"HPDConfig.embedding_dim must be a positive integer or None (no head); got {self.embedding_dim!r}."
            )
        if self.projection_activation not in PROJECTION_ACTIVATIONS:
            raise ValueError(
                f"HPDConfig.projection_activation must be one of {', '.join(PROJECTION_ACTIVATIONS)}; "
                f"got {self.projection_activation!r}."
            )
        for name in ("projection_bias", "normalize"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"HPDConfig.{name} must be true or false; got {getattr(self, name)!r}.")
        if not _is_positive_int(self.max_seq_length) or self.max_seq_length > self.max_position_embeddings:
            raise ValueError(
                f"HPDConfig.max_seq_length must be an integer from 1 to max_position_embeddings "
                f"({self.max_position_embeddings}); got {self.max_seq_length!r}."
            )
        dims = self.matryoshka_dims
        if dims is not None and (not isinstance(dims, list) or not all(_is_positive_int(d) for d in dims) or not dims
                                 or dims != sorted(set(dims), reverse=True) or dims[0] > self.projection_dim):
            raise ValueError(
                f"HPDConfig.matryoshka_dims must be distinct positive integers, largest first, none above the "
                f"embedding size {self.projection_dim}, or None; got {dims!r}."
            )

    @property
    def projection_dim(self):
        """Size of the sentence embedding, with or without a head (the name sentence-transformers reads it under)."""
        return self.hidden_size if self.embedding_dim is None else self.embedding_dim

    def truncation_warning(self, dim, name="truncate_dim"):
        """Checks a size to truncate embeddings to: see `truncation_warning` (the module function)."""
        return truncation_warning(dim, self.projection_dim, self.matryoshka_dims, name)


def truncation_warning(dim, output_dim, trained_dims=None, name="truncate_dim"):
    """None when embeddings of size `output_dim` may be cut to their first `dim` coordinates as trained; a warning
    text when allowed but not trained for; ValueError when impossible (0, negative, above `output_dim`)."""
    if not _is_positive_int(dim) or dim > output_dim:
        problem = (f"{name} {dim} is larger than the model's {output_dim}-d embeddings" if _is_positive_int(dim)
                   else f"{name} must be a positive integer, not {dim!r}")
        raise ValueError(f"{problem}; choose {name} from 1 to {output_dim}.")
    if dim == output_dim or dim in (trained_dims or ()):
        return None
    trained = (f"was trained for {', '.join(map(str, trained_dims))} dimensions" if trained_dims
               else "records no Matryoshka dimensions (matryoshka_dims)")
    return (f"the model {trained}, not {dim}: its first {dim} coordinates were not trained to be an embedding of "
            "their own, so expect lower quality than a model trained for that size.")


def _is_positive_int(value):
    return isinstance(value, int) and not isinstance(value, bool) and value > 0
