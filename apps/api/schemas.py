"""Request bodies of the /v1 endpoints. Unknown fields are refused by name."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any, Literal

from django.conf import settings
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from apps.core.documents import DocumentText, document_text, with_documents
from apps.core.errors import ErrorCode, ServiceError, invalid_input
from apps.inference.grammars import json_object_grammar, json_schema_grammar
from apps.inference.models import MAX_END_USER
from apps.inference.protocol import MAX_TOP_LOGPROBS
from apps.inference.tools import Function, call_block, call_grammar, tool_response, with_tools

MAX_CHOICES = 4
MAX_COMPLETION_LOGPROBS = 5  # the completions API's own bound
MAX_TOOLS = 128  # OpenAI's bound on the functions one request may offer


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextPart(_Strict):
    type: Literal["text"]
    text: str


def read_file_data(
    filename: str | None, file_data: str | None, file_id: str | None
) -> DocumentText:
    """The document a request carries in a content part (OpenAI's ``file`` and ``input_file``
    shapes): ``file_data`` as base64 or a ``data:`` URL, with its ``filename``, whose extension
    says how to read it (``apps.core.documents``). ValueError, saying what to send instead, for
    a ``file_id`` (files uploaded for this use are not kept here), no data, bad base64, a file
    over CHAT_MAX_DOCUMENT_BYTES, or a file that is not a readable document."""
    if file_id is not None:
        raise ValueError(
            "file_id is not supported here: send the file itself as file_data (base64, or a "
            "data: URL) with its filename"
        )
    if not file_data or not filename:
        raise ValueError(
            "send the file as file_data (base64, or a data: URL) with its filename, whose "
            "extension (.txt, .md, .csv, .html or .pdf) says how to read it"
        )
    encoded = file_data.split(",", 1)[1] if file_data.startswith("data:") else file_data
    try:
        data = base64.b64decode(encoded, validate=True)
    except binascii.Error:
        raise ValueError("file_data is not valid base64") from None
    limit = settings.CHAT_MAX_DOCUMENT_BYTES
    if len(data) > limit:
        raise ValueError(f"the file has {len(data)} bytes; the limit is {limit}")
    try:
        return document_text(filename, data)
    except ServiceError as refused:
        raise ValueError(refused.message) from None


class FileContent(_Strict):
    filename: str | None = None
    file_data: str | None = None
    file_id: str | None = None


class FilePart(_Strict):
    """A document in a chat message (OpenAI's ``{"type": "file", "file": {...}}``): its text goes
    before the message's own text, in ``apps.core.documents``' form."""

    type: Literal["file"]
    file: FileContent
    _document: DocumentText = PrivateAttr()

    @model_validator(mode="after")
    def _read(self) -> FilePart:
        self._document = read_file_data(self.file.filename, self.file.file_data, self.file.file_id)
        return self

    @property
    def document(self) -> DocumentText:
        return self._document


def _by_type(classes: dict[str, type[BaseModel]], expected: str) -> Discriminator:
    """A union of content parts chosen by their ``type``, tagged with class names (which error
    locations leave out, as they do pydantic's own union tags); another type is refused with
    "Input should be a part of type ``expected``"."""

    def tag(value: Any) -> str | None:
        kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
        found = classes.get(str(kind))
        return found.__name__ if found else None

    return Discriminator(
        tag,
        custom_error_type="content_part_type",
        custom_error_message=f"Input should be a part of type {expected} (the models here read text)",
    )


ChatPart = Annotated[
    Annotated[TextPart, Tag("TextPart")] | Annotated[FilePart, Tag("FilePart")],
    _by_type({"text": TextPart, "file": FilePart}, "text or file"),
]


def joined_text(parts: list[Any]) -> str:
    """A message's text from its parts: the documents' blocks first, then its text parts."""
    files = [p.document for p in parts if isinstance(p, FilePart | InputFilePart)]
    text = "".join(p.text for p in parts if not isinstance(p, FilePart | InputFilePart))
    documents = [(document.name, document.text) for document in files]
    return with_documents(text, documents)


FUNCTION_NAME = r"^[A-Za-z0-9_-]{1,64}$"


class CalledFunction(_Strict):
    name: str = Field(pattern=FUNCTION_NAME)
    arguments: str  # the JSON text of the arguments, as the model wrote them


class ToolCall(_Strict):
    id: str = Field(min_length=1, max_length=100)
    type: Literal["function"] = "function"
    function: CalledFunction


class ChatMessage(_Strict):
    role: Literal["system", "user", "assistant", "developer", "tool"]
    # A string arrives as one text part; None: an assistant turn that only called.
    content: list[ChatPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None  # an assistant turn's calls
    tool_call_id: str | None = None  # a tool message: the call it answers

    @model_validator(mode="before")
    @classmethod
    def _parts_of_content(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("content"), str):
            return {**data, "content": [{"type": "text", "text": data["content"]}]}
        return data

    @model_validator(mode="after")
    def _fields_of_its_role(self) -> ChatMessage:
        if self.tool_calls and self.role != "assistant":
            raise ValueError("only an assistant message carries tool_calls")
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs the tool_call_id of the call it answers")
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise ValueError("content is required (it may be null only beside tool_calls)")
        return self

    def text(self) -> str:
        return "" if self.content is None else joined_text(self.content)


class FunctionDefinition(_Strict):
    name: str = Field(pattern=FUNCTION_NAME)
    description: str | None = None
    parameters: dict[str, Any] | None = None  # JSON Schema of the arguments; None: any object
    strict: bool | None = None  # calls are held to the schema where they are required


class Tool(_Strict):
    type: Literal["function"]
    function: FunctionDefinition


class FunctionName(_Strict):
    name: str


class NamedToolChoice(_Strict):
    type: Literal["function"]
    function: FunctionName


class StreamOptions(_Strict):
    include_usage: bool = False


class JsonSchemaFormat(_Strict):
    """``response_format.json_schema``: OpenAI's shape. The answer is always held to the schema
    (``strict`` false is held to it as well: a small model left free rarely writes valid JSON)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")  # None: any JSON object
    strict: bool | None = None


class ResponseFormat(_Strict):
    """``response_format``: free text, any JSON object, or JSON valid against a schema."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None
    # Where the schema sits in the request, for its errors (the Responses API's differs).
    _where: str = PrivateAttr("response_format.json_schema.schema")

    @model_validator(mode="after")
    def _schema_only_with_its_type(self) -> ResponseFormat:
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise ServiceError(
                ErrorCode.INVALID_PARAMETER,
                'response_format.json_schema ({"name": ..., "schema": {...}}) goes with '
                '"type": "json_schema", and only with it.',
                param="response_format.json_schema",
            )
        return self

    def grammar(self) -> str | None:
        """The grammar the answer is decoded under (None: free text); a schema llguidance
        cannot follow is refused here, before anything is queued."""
        if self.type == "text":
            return None
        if self.json_schema is None:
            return json_object_grammar()
        schema = self.json_schema.schema_
        if schema is None:
            return json_object_grammar()
        return json_schema_grammar(schema, param=self._where)


class _Sampling(_Strict):
    model: str
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    repetition_penalty: float | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logit_bias: dict[str, float] | None = None  # token ids (as JSON keys are: strings) to biases
    min_p: float | None = None
    max_tokens: int | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = Field(1, ge=1, le=MAX_CHOICES)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(None, max_length=MAX_END_USER)  # stored with the generation
    response_format: ResponseFormat | None = None

    @field_validator("logit_bias")
    @classmethod
    def _bias_keys_are_token_ids(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        for key in value or {}:
            if not key.isdecimal():
                raise ValueError(f'its keys are token ids such as "1234", and "{key}" is not one')
        return value

    def sampling(self) -> dict[str, Any]:
        """The sampling parameters the request sets (``completion_start`` fills in the rest)."""
        values = {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "repetition_penalty": self.repetition_penalty,
            "frequency_penalty": self.frequency_penalty,
            "presence_penalty": self.presence_penalty,
            "logit_bias": (
                {int(k): v for k, v in self.logit_bias.items()} if self.logit_bias else None
            ),
            "min_p": self.min_p,
            "max_tokens": self.max_tokens,
            "stop": self.stop,
            "seed": self.seed,
            "grammar": self.response_format.grammar() if self.response_format else None,
        }
        return {k: v for k, v in values.items() if v is not None}

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = None
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    tools: list[Tool] | None = Field(None, max_length=MAX_TOOLS)
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool = True

    @model_validator(mode="after")
    def _top_logprobs_needs_logprobs(self) -> ChatCompletionRequest:
        if self.top_logprobs is not None and not self.logprobs:
            raise ServiceError(
                ErrorCode.INVALID_PARAMETER,
                "top_logprobs needs logprobs: true as well.",
                param="top_logprobs",
            )
        return self

    @model_validator(mode="after")
    def _tools_fit_together(self) -> ChatCompletionRequest:
        names = [tool.function.name for tool in self.tools or ()]
        if len(set(names)) < len(names):
            raise ServiceError(
                ErrorCode.INVALID_PARAMETER, "Each tool needs a name of its own.", param="tools"
            )
        choice = self.tool_choice
        if choice not in (None, "none") and not names:
            raise ServiceError(
                ErrorCode.INVALID_PARAMETER,
                "tool_choice needs tools to choose from.",
                param="tool_choice",
            )
        if isinstance(choice, NamedToolChoice) and choice.function.name not in names:
            raise ServiceError(
                ErrorCode.INVALID_PARAMETER,
                f'tool_choice names the function "{choice.function.name}", which is not '
                "among the tools.",
                param="tool_choice.function.name",
            )
        if self.calling != "none" and self.response_format and self.response_format.type != "text":
            raise ServiceError(
                ErrorCode.INVALID_PARAMETER,
                "response_format cannot be combined with tools (a call is JSON already); "
                'send one of them, or tool_choice "none".',
                param="response_format",
            )
        calls: dict[str, str] = {}
        for index, message in enumerate(self.messages):
            for call in message.tool_calls or ():
                calls[call.id] = call.function.name
            if message.role == "tool" and message.tool_call_id not in calls:
                raise ServiceError(
                    ErrorCode.INVALID_PARAMETER,
                    f'messages[{index}] answers the tool call "{message.tool_call_id}", but no '
                    "earlier assistant message made a call with that id.",
                    param=f"messages.{index}.tool_call_id",
                )
        return self

    @property
    def calling(self) -> str:
        """How the answer may call the tools: "none", "auto", "required" or a function's name."""
        if not self.tools or self.tool_choice == "none":
            return "none"
        if isinstance(self.tool_choice, NamedToolChoice):
            return self.tool_choice.function.name
        return self.tool_choice or "auto"

    def functions(self) -> list[Function]:
        """The offered functions, as the prompt lists them (none when calls are off)."""
        if self.calling == "none":
            return []
        return [
            Function(t.function.name, t.function.description or "", t.function.parameters)
            for t in self.tools or ()
        ]

    def engine_messages(self) -> list[dict[str, str]]:
        """The conversation as the model reads it: developer turns as system turns, the offered
        functions in the system message, calls and their results in ``tools``' format."""
        functions = self.functions()
        names: dict[str, str] = {}
        messages: list[dict[str, str]] = []
        for message in self.messages:
            role, text = message.role, message.text()
            if role == "developer":
                role = "system"
            if message.tool_calls:
                names.update((call.id, call.function.name) for call in message.tool_calls)
                blocks = [
                    call_block(c.function.name, c.function.arguments) for c in message.tool_calls
                ]
                text = "\n".join(filter(None, [text, *blocks]))
            if role == "tool":
                role, text = "user", tool_response(names[message.tool_call_id or ""], text)
            messages.append({"role": role, "content": text})
        if functions:
            if messages[0]["role"] == "system":
                messages[0]["content"] = with_tools(messages[0]["content"], functions)
            else:
                messages.insert(0, {"role": "system", "content": with_tools("", functions)})
        return messages

    def sampling(self) -> dict[str, Any]:
        values = super().sampling()
        if self.max_completion_tokens is not None:
            values["max_tokens"] = self.max_completion_tokens
        if self.logprobs:
            values["logprobs"] = self.top_logprobs or 0
        calling = self.calling
        if calling not in ("none", "auto"):
            functions = self.functions()
            if calling != "required":
                functions = [f for f in functions if f.name == calling]
            parallel = self.parallel_tool_calls and calling == "required"
            values["grammar"] = call_grammar(functions, parallel=parallel)
        return values


class CompletionRequest(_Sampling):
    prompt: str = Field(min_length=1)
    # The likeliest alternatives to list at each position (0: the chosen token's alone).
    logprobs: int | None = Field(None, ge=0, le=MAX_COMPLETION_LOGPROBS)
    echo: bool = False  # the prompt before the completion in the answer's text

    def sampling(self) -> dict[str, Any]:
        values = super().sampling()
        if self.logprobs is not None:
            values["logprobs"] = self.logprobs
            if self.echo:
                values["prompt_logprobs"] = True
        return values


def parse(schema: type[_Strict], data: Any) -> Any:
    """Validate a request body; raise ServiceError naming the field at fault."""
    if not isinstance(data, dict):
        raise ServiceError(ErrorCode.INVALID_PARAMETER, "The request body must be a JSON object.")
    where = _nul_at(data)
    if where is not None:
        raise ServiceError(
            ErrorCode.INVALID_PARAMETER,
            f"{where} contains a NUL character (\\u0000), which text cannot hold; remove it.",
            param=where.split("[")[0].split(".")[0],
        )
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        raise invalid_input(exc) from None


def _nul_at(value: Any, path: str = "") -> str | None:
    """The path of the first string (key or value) holding a NUL character, if any."""
    if isinstance(value, str):
        return (path or "body") if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            here = f"{path}.{key}" if path else str(key)
            if "\x00" in str(key):
                return here
            if (found := _nul_at(item, here)) is not None:
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            if (found := _nul_at(item, f"{path}[{index}]")) is not None:
                return found
    return None


MAX_EMBEDDING_INPUTS = 256


class _Texts(_Strict):
    """A request of texts for an encoder model: ``input`` is one text or a list of them."""

    model: str
    input: str | list[str]

    def inputs(self) -> list[str]:
        """The inputs as a list; raises ServiceError for an empty one or too many."""
        items = [self.input] if isinstance(self.input, str) else self.input
        if not items:
            raise ServiceError(
                ErrorCode.INVALID_PARAMETER, "input must not be an empty list", param="input"
            )
        if len(items) > MAX_EMBEDDING_INPUTS:
            raise ServiceError(
                ErrorCode.INVALID_PARAMETER,
                f"input has {len(items)} items; at most {MAX_EMBEDDING_INPUTS} "
                "are accepted per request",
                param="input",
            )
        for index, item in enumerate(items):
            if not item.strip():
                raise ServiceError(
                    ErrorCode.INVALID_PARAMETER,
                    f"input[{index}] is empty; every input needs some text",
                    param="input",
                )
        return items


class EmbeddingRequest(_Texts):
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None


class ClassificationRequest(_Texts):
    """``POST /v1/classifications``: texts in; a label and the score of every label out."""


class FineTuningJobRequest(_Strict):
    """``POST /v1/fine_tuning/jobs``: OpenAI's fields; ``hyperparameters`` takes this platform's
    names (apps.finetuning.schemas.Hyperparameters); ``method`` is ``{"type": "lora"|"full"|"head"}``
    (or just the type)."""

    model: str
    training_file: str
    validation_file: str | None = None
    suffix: str | None = Field(None, max_length=32)
    seed: int | None = None
    method: Any = None  # None: LoRA for a chat model, full fine-tuning for a classifier
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    # This platform's: an eval set (``eval_…``) run on the base and on the result, compared on
    # the job's page (``extra_body`` in OpenAI's client).
    eval_set: str | None = None

    @field_validator("method")
    @classmethod
    def _method_type(cls, value: Any) -> str | None:
        if isinstance(value, dict) and set(value) == {"type"}:
            value = value["type"]
        if value is not None and value not in ("lora", "full", "head"):
            raise ValueError('use {"type": "lora"}, {"type": "full"} or {"type": "head"}')
        return None if value is None else str(value)


# The Responses API (POST /v1/responses): its own request shape, answered by the same chat
# completion underneath (``ResponseRequest.chat_request``).

MAX_METADATA = 16  # OpenAI's bounds on metadata: pairs, key and value lengths
MAX_METADATA_KEY, MAX_METADATA_VALUE = 64, 512
_NOT_TEXT = ("input_image", "input_audio")


class ContentPart(_Strict):
    """A piece of a message's text: ``input_text``, or ``output_text`` in an earlier answer
    sent back."""

    type: Literal["input_text", "output_text"]
    text: str
    annotations: list[Any] | None = None  # an echoed answer's; there are none here

    @model_validator(mode="before")
    @classmethod
    def _text_only(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("type") in _NOT_TEXT:
            raise ValueError(
                f"{data['type']} is not supported: the models here read text only; "
                "send the content as input_text"
            )
        return data


class InputFilePart(_Strict):
    """A document in a Responses input message (OpenAI's ``input_file``), read as ``FilePart``."""

    type: Literal["input_file"]
    filename: str | None = None
    # Read once, and not kept: a stored response lists the part by its filename.
    file_data: str | None = Field(None, exclude=True)
    file_id: str | None = None
    _document: DocumentText = PrivateAttr()

    @model_validator(mode="after")
    def _read(self) -> InputFilePart:
        self._document = read_file_data(self.filename, self.file_data, self.file_id)
        return self

    @property
    def document(self) -> DocumentText:
        return self._document


InputPart = Annotated[
    Annotated[ContentPart, Tag("ContentPart")] | Annotated[InputFilePart, Tag("InputFilePart")],
    _by_type(
        {
            "input_text": ContentPart,
            "output_text": ContentPart,
            "input_file": InputFilePart,
            # Refused by ContentPart, which says why.
            **dict.fromkeys(_NOT_TEXT, ContentPart),
        },
        "input_text, output_text or input_file",
    ),
]


class MessageItem(_Strict):
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    # A string arrives as one part.
    content: list[InputPart]
    id: str | None = None
    status: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _parts_of_content(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("content"), str):
            part = "output_text" if data.get("role") == "assistant" else "input_text"
            return {**data, "content": [{"type": part, "text": data["content"]}]}
        return data

    def text(self) -> str:
        return joined_text(self.content)


class FunctionCallItem(_Strict):
    """A call an earlier answer made, sent back before its output."""

    type: Literal["function_call"]
    call_id: str = Field(min_length=1, max_length=100)
    name: str = Field(pattern=FUNCTION_NAME)
    arguments: str
    id: str | None = None
    status: str | None = None


class FunctionCallOutputItem(_Strict):
    """What the program's function returned for the call ``call_id``."""

    type: Literal["function_call_output"]
    call_id: str = Field(min_length=1, max_length=100)
    output: str
    id: str | None = None
    status: str | None = None


InputItem = Annotated[
    MessageItem | FunctionCallItem | FunctionCallOutputItem, Field(discriminator="type")
]


class ResponseTool(_Strict):
    """A function tool, in the Responses API's flat shape."""

    type: Literal["function"]
    name: str = Field(pattern=FUNCTION_NAME)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ResponseToolChoice(_Strict):
    type: Literal["function"]
    name: str


class TextFormat(_Strict):
    """``text.format``: free text, any JSON object, or JSON valid against a schema (flat)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    type: Literal["text", "json_object", "json_schema"]
    name: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None

    @model_validator(mode="after")
    def _schema_fields_with_their_type(self) -> TextFormat:
        if self.type == "json_schema" and self.name is None:
            raise ServiceError(
                ErrorCode.INVALID_PARAMETER,
                'text.format of "type": "json_schema" needs a name (and its schema).',
                param="text.format.name",
            )
        if self.type != "json_schema" and (self.name or self.schema_ is not None):
            raise ServiceError(
                ErrorCode.INVALID_PARAMETER,
                'name and schema go with "type": "json_schema", and only with it.',
                param="text.format",
            )
        return self

    def shape(self) -> dict[str, Any]:
        """As the response object shows it."""
        return self.model_dump(by_alias=True, exclude_none=True)


class TextOptions(_Strict):
    format: TextFormat | None = None


class ResponseRequest(_Strict):
    """``POST /v1/responses``, text in and out."""

    model: str
    input: list[InputItem]  # a string arrives as one user message
    instructions: str | None = None
    previous_response_id: str | None = None
    store: bool = True
    background: bool = False
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = None
    top_p: float | None = None
    stream: bool = False
    metadata: dict[str, str] | None = Field(None, max_length=MAX_METADATA)
    text: TextOptions | None = None
    tools: list[ResponseTool] | None = Field(None, max_length=MAX_TOOLS)
    tool_choice: Literal["none", "auto", "required"] | ResponseToolChoice | None = None
    parallel_tool_calls: bool = True
    truncation: str | None = None
    user: str | None = Field(None, max_length=MAX_END_USER)

    @field_validator("input", mode="before")
    @classmethod
    def _items_of_input(cls, value: Any) -> Any:
        """A string is one user message; an item without a type is a message."""
        if not value:
            raise ValueError("send the text to answer (a string, or a list of items)")
        if isinstance(value, str):
            return [{"type": "message", "role": "user", "content": value}]
        if isinstance(value, list):
            return [
                {"type": "message", **item}
                if isinstance(item, dict) and "type" not in item
                else item
                for item in value
            ]
        return value

    @field_validator("truncation")
    @classmethod
    def _never_truncated(cls, value: str | None) -> str | None:
        # "auto" would drop the start of a conversation that outgrows the context; an answer to
        # a silently shortened conversation is not what was asked for.
        if value not in (None, "disabled"):
            raise ValueError(
                'only "disabled" is supported: the start of a conversation is never dropped '
                "here; shorten the input or start a new chain"
            )
        return value

    @field_validator("metadata")
    @classmethod
    def _metadata_bounds(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for key, text in (value or {}).items():
            if len(key) > MAX_METADATA_KEY:
                raise ValueError(f"its keys are at most {MAX_METADATA_KEY} characters")
            if len(text) > MAX_METADATA_VALUE:
                raise ValueError(f"its values are at most {MAX_METADATA_VALUE} characters")
        return value

    @model_validator(mode="after")
    def _background_is_stored(self) -> ResponseRequest:
        if self.background and not self.store:
            raise ServiceError(
                ErrorCode.INVALID_PARAMETER,
                "A background response is stored (it is fetched later): drop store: false.",
                param="store",
            )
        return self

    def echoed(self) -> dict[str, Any]:
        """What the response object shows of this request (``StoredResponse.request``)."""
        choice = self.tool_choice
        text_format = self.text.format if self.text and self.text.format else None
        return {
            "instructions": self.instructions,
            "max_output_tokens": self.max_output_tokens,
            "metadata": self.metadata or {},
            "background": self.background,
            "store": self.store,
            "previous_response_id": self.previous_response_id,
            "parallel_tool_calls": self.parallel_tool_calls,
            "tools": [tool.model_dump(exclude_none=True) for tool in self.tools or ()],
            "tool_choice": choice.model_dump()
            if isinstance(choice, ResponseToolChoice)
            else choice or "auto",
            "text": {"format": text_format.shape() if text_format else {"type": "text"}},
            "user": self.user,
        }

    def items(self) -> list[MessageItem | FunctionCallItem | FunctionCallOutputItem]:
        return list(self.input)

    def input_messages(self, known_calls: set[str]) -> list[dict[str, Any]]:
        """This request's input as chat-completions messages: calls an answer made (consecutive
        ones in one assistant message) and their outputs as tool messages. ``known_calls``: the
        call ids the earlier turns made; an output for any other call is refused."""
        messages: list[dict[str, Any]] = []
        calls = set(known_calls)
        for index, item in enumerate(self.items()):
            if isinstance(item, MessageItem):
                messages.append({"role": item.role, "content": item.text()})
            elif isinstance(item, FunctionCallItem):
                call = {
                    "id": item.call_id,
                    "type": "function",
                    "function": {"name": item.name, "arguments": item.arguments},
                }
                calls.add(item.call_id)
                last = messages[-1] if messages else None
                if last and last["role"] == "assistant" and last.get("tool_calls"):
                    last["tool_calls"].append(call)
                else:
                    messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
            else:
                if item.call_id not in calls:
                    raise ServiceError(
                        ErrorCode.INVALID_PARAMETER,
                        f'input[{index}] is the output of the call "{item.call_id}", but no '
                        "earlier answer or function_call item made a call with that id.",
                        param=f"input.{index}.call_id",
                    )
                messages.append(
                    {"role": "tool", "tool_call_id": item.call_id, "content": item.output}
                )
        return messages

    def chat_request(self, messages: list[dict[str, Any]]) -> ChatCompletionRequest:
        """The chat completion that answers this request over ``messages`` (the conversation
        with this input, without the instructions, which come first here)."""
        if self.instructions:
            messages = [{"role": "system", "content": self.instructions}, *messages]
        body: dict[str, Any] = {"model": self.model, "messages": messages}
        for name, value in (
            ("temperature", self.temperature),
            ("top_p", self.top_p),
            ("max_completion_tokens", self.max_output_tokens),
            ("user", self.user),
        ):
            if value is not None:
                body[name] = value
        if self.tools:
            body["tools"] = [
                {"type": "function", "function": t.model_dump(exclude={"type"}, exclude_none=True)}
                for t in self.tools
            ]
            body["parallel_tool_calls"] = self.parallel_tool_calls
        if isinstance(self.tool_choice, ResponseToolChoice):
            body["tool_choice"] = {"type": "function", "function": {"name": self.tool_choice.name}}
        elif self.tool_choice is not None:
            body["tool_choice"] = self.tool_choice
        text_format = self.text.format if self.text else None
        if text_format is not None and text_format.type != "text":
            body["response_format"] = {"type": text_format.type}
            if text_format.type == "json_schema":
                body["response_format"]["json_schema"] = {
                    "name": text_format.name,
                    "schema": text_format.schema_,
                    "strict": text_format.strict,
                    "description": text_format.description,
                }
        try:
            chat = ChatCompletionRequest.model_validate(body)
        except ServiceError as error:  # a check the chat request makes, in this API's names
            raise ServiceError(
                error.code, _responses_names(error.message), param=_responses_names(error.param)
            ) from None
        except ValidationError as exc:
            first = invalid_input(exc)
            raise ServiceError(first.code, _responses_names(first.message), param="input") from None
        if chat.response_format is not None:
            chat.response_format._where = "text.format.schema"
        return chat


_CHAT_NAMES = {
    "response_format": "text.format",
    "tool_choice.function.name": "tool_choice.name",
    "max_completion_tokens": "max_output_tokens",
    "messages": "input",
}


def _responses_names(text: str | None) -> Any:
    """A chat request's parameter names in ``text`` as the Responses API calls them."""
    if text is None:
        return None
    for chat, responses in _CHAT_NAMES.items():
        text = text.replace(chat, responses)
    return text
