"""POST /v1/images/edits: OpenAI's images.edit, answered when the edit has finished."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException

from ...schema import MAX_REFERENCE_IMAGES, MODEL_SLUG, InputError, validated_input
from ..bodies import request_body
from ..deps import BaseUrlDep, CallerDep, OwnHostsDep, ServicesDep
from ..errors import ApiError
from ..uploads import MAX_FORM_FIELD_BYTES, MAX_UPLOAD_BYTES, MULTIPART_OVERHEAD, store_mask_upload, store_upload
from .errors import OPENAI_ERRORS
from .inputs import their_error, to_edit_input
from .protocol import ImageEditForm, ImagesResponse
from .views import images_response

router = APIRouter(tags=["openai"], responses=OPENAI_ERRORS)
MAX_IMAGES = 1 + MAX_REFERENCE_IMAGES
IMAGE_FIELDS = ("image", "image[]")  # one image, or the client's array of them
MASK_FIELD = "mask"
RESPONSE_FORMATS = ("b64_json", "url")


@router.post(
    "/v1/images/edits",
    openapi_extra=request_body(("multipart/form-data", ImageEditForm)),
    response_model_exclude_none=True,  # an image is b64_json or url, never both
)
async def edit_images(
    request: Request, found: ServicesDep, who: CallerDep, base: BaseUrlDep, hosts: OwnHostsDep
) -> ImagesResponse:
    """Multipart: image (one, or several: the first is edited, the others are references), mask (a PNG whose
    fully transparent pixels are the part to edit), prompt, n, size, response_format (b64_json by default,
    or url), output_format, output_compression."""
    found.runner.admit(who)  # rate, queue and spending limits before any upload is read, decoded or stored
    form = await _form(request)
    images = [part for name in IMAGE_FIELDS for part in form.getlist(name)]
    masks = form.getlist(MASK_FIELD)
    fields = {name: value for name, value in form.multi_items() if name not in (*IMAGE_FIELDS, MASK_FIELD)}
    _check_images(images)
    _check_masks(masks)
    model = fields.pop("model", MODEL_SLUG)
    if model != MODEL_SLUG:
        message = f"model: {model!r} does not exist here; this server runs {MODEL_SLUG}"
        raise ApiError(404, message, code="model_not_found")
    response_format = fields.pop("response_format", RESPONSE_FORMATS[0])
    if response_format not in RESPONSE_FORMATS:
        raise InputError("response_format", f"must be b64_json or url (got {response_format!r})")
    try:
        edit_fields = to_edit_input(fields)
        stored = [await store_upload(found, who, image, "image") for image in images]
        edit_fields["image_url"] = stored[0].id
        if len(stored) > 1:
            edit_fields["image_urls"] = [record.id for record in stored[1:]]
        if masks:
            edit_fields["mask_url"] = (await store_mask_upload(found, who, masks[0], MASK_FIELD)).id  # in our form
        prediction = await found.runner.create(
            who, validated_input(edit_fields), base_url=base, own_hosts=hosts, admitted=True
        )
    except InputError as error:
        raise their_error(error) from None
    ended = await found.runner.wait(prediction.id, found.settings.execution_timeout + 60)
    return await images_response(found, ended, base, response_format)


async def _form(request: Request) -> FormData:
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > (MAX_IMAGES + 1) * (MAX_UPLOAD_BYTES + MULTIPART_OVERHEAD):
        raise ApiError(413, f"request body: is larger than {MAX_IMAGES} images and a mask of 50 MB each")
    try:  # read here, not by FastAPI: counted while it streams (body_limit.py), each image spooled to disk
        # Room for more images than we take, so too many get a message that says so.
        return await request.form(max_files=17, max_fields=64, max_part_size=MAX_FORM_FIELD_BYTES)
    except MultiPartException as error:
        raise ApiError(400, f"request body: not a valid multipart form ({error.message})") from None


def _check_images(images: list) -> None:
    if not images or not all(isinstance(image, UploadFile) for image in images):
        raise InputError("image", "is required: an image file (several: the first is edited, the others guide it)")
    if len(images) > MAX_IMAGES:
        raise InputError("image", f"at most {MAX_IMAGES} images: one to edit and {MAX_REFERENCE_IMAGES} references "
                         f"(got {len(images)})")  # fmt: skip


def _check_masks(masks: list) -> None:
    if not all(isinstance(mask, UploadFile) for mask in masks):
        raise InputError(MASK_FIELD, "must be a file: a PNG whose fully transparent pixels are the part to edit")
    if len(masks) > 1:
        raise InputError(MASK_FIELD, f"one mask at most (got {len(masks)}); it applies to the first image")
