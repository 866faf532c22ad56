"""Accounts, devices and profiles through matrix-nio's AsyncClient against a real Myelin."""

from nio.responses import (
    DeleteDevicesAuthResponse,
    DeleteDevicesResponse,
    DevicesResponse,
    LoginError,
    LoginInfoResponse,
    LoginResponse,
    LogoutResponse,
    ProfileGetDisplayNameResponse,
    ProfileGetResponse,
    ProfileSetDisplayNameResponse,
    RegisterErrorResponse,
    RegisterInteractiveResponse,
    RegisterResponse,
    UpdateDeviceResponse,
    WhoamiError,
    WhoamiResponse,
)

from conftest import PASSWORD, SERVER_NAME


def mxid(localpart: str) -> str:
    return f"@{localpart}:{SERVER_NAME}"


async def register(new_client, username: str, device_name: str):
    client = new_client(username)
    resp = await client.register(username, PASSWORD, device_name=device_name)
    assert isinstance(resp, RegisterResponse), resp
    assert resp.user_id == mxid(username)
    assert client.logged_in and client.access_token == resp.access_token
    return client


async def login(new_client, username: str, device_name: str):
    client = new_client(mxid(username))
    resp = await client.login(PASSWORD, device_name=device_name)
    assert isinstance(resp, LoginResponse), resp
    assert resp.user_id == mxid(username)
    return client


async def assert_token_refused(new_client, user_id: str, device_id: str, access_token: str):
    """A fresh client holding an old token: /whoami must answer 401 M_UNKNOWN_TOKEN."""
    client = new_client(user_id)
    client.restore_login(user_id, device_id, access_token)
    resp = await client.whoami()
    assert isinstance(resp, WhoamiError), resp
    assert resp.status_code == "M_UNKNOWN_TOKEN"
    assert resp.transport_response.status == 401
    assert resp.soft_logout is False


async def device_names(client) -> dict[str, str]:
    resp = await client.devices()
    assert isinstance(resp, DevicesResponse), resp
    return {d.id: d.display_name for d in resp.devices}


async def test_account_lifecycle(new_client, username):
    phone = await register(new_client, username, "nio phone")
    laptop = await login(new_client, username, "nio laptop")
    assert laptop.device_id != phone.device_id

    # Profile: set on one device, read back from the other.
    resp = await phone.set_displayname("Alice Nio")
    assert isinstance(resp, ProfileSetDisplayNameResponse), resp
    resp = await laptop.get_displayname(mxid(username))
    assert isinstance(resp, ProfileGetDisplayNameResponse), resp
    assert resp.displayname == "Alice Nio"
    resp = await laptop.get_profile()
    assert isinstance(resp, ProfileGetResponse), resp
    assert (resp.displayname, resp.avatar_url) == ("Alice Nio", None)

    # Devices: both listed with the names given at register/login; rename one.
    assert await device_names(laptop) == {phone.device_id: "nio phone", laptop.device_id: "nio laptop"}
    resp = await laptop.update_device(phone.device_id, {"display_name": "old phone"})
    assert isinstance(resp, UpdateDeviceResponse), resp
    assert await device_names(laptop) == {phone.device_id: "old phone", laptop.device_id: "nio laptop"}

    # Delete the phone through user-interactive auth: ask, fail once, then succeed.
    resp = await laptop.delete_devices([phone.device_id])
    assert isinstance(resp, DeleteDevicesAuthResponse), resp
    assert resp.transport_response.status == 401
    assert {"stages": ["m.login.password"]} in resp.flows
    auth = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": username},
        "password": "not the password",
        "session": resp.session,
    }
    retry = await laptop.delete_devices([phone.device_id], auth)
    assert isinstance(retry, DeleteDevicesAuthResponse), retry  # nio's type for any 401 here
    assert retry.session == resp.session
    # nio drops the errcode of a UIA 401, so read it from nio's own (already received) response.
    assert (await retry.transport_response.json())["errcode"] == "M_FORBIDDEN"
    resp = await laptop.delete_devices([phone.device_id], {**auth, "password": PASSWORD})
    assert isinstance(resp, DeleteDevicesResponse), resp
    assert await device_names(laptop) == {laptop.device_id: "nio laptop"}
    await assert_token_refused(new_client, phone.user_id, phone.device_id, phone.access_token)

    resp = await laptop.whoami()
    assert isinstance(resp, WhoamiResponse), resp
    assert (resp.user_id, resp.device_id, resp.is_guest) == (mxid(username), laptop.device_id, False)

    token = laptop.access_token
    resp = await laptop.logout()
    assert isinstance(resp, LogoutResponse), resp
    assert not laptop.logged_in
    await assert_token_refused(new_client, mxid(username), laptop.device_id, token)


async def test_register_interactive_session(new_client, username):
    """The full UIA dance: get a session and the flows, then complete m.login.dummy with it."""
    client = new_client(username)
    # nio sends an auth dict without "type" to start the flow, as its register_with_token does.
    resp = await client.register_interactive(username, PASSWORD, {"session": None})
    assert isinstance(resp, RegisterInteractiveResponse), resp
    assert resp.stages == ["m.login.dummy"] and resp.session
    resp = await client.register(username, PASSWORD, device_name="uia", session_token=resp.session)
    assert isinstance(resp, RegisterResponse), resp
    assert resp.user_id == mxid(username)
    assert await device_names(client) == {resp.device_id: "uia"}


async def test_wrong_password_is_forbidden(new_client, username):
    await register(new_client, username, "first")
    client = new_client(mxid(username))
    resp = await client.login_info()
    assert isinstance(resp, LoginInfoResponse), resp
    assert "m.login.password" in resp.flows
    resp = await client.login("wrong password", device_name="nope")
    assert isinstance(resp, LoginError), resp
    assert resp.status_code == "M_FORBIDDEN"
    assert resp.transport_response.status == 403
    assert not client.logged_in


async def test_taken_username_is_refused(new_client, username):
    await register(new_client, username, "first")
    resp = await new_client(username).register(username, "another password")
    assert isinstance(resp, RegisterErrorResponse), resp
    assert resp.status_code == "M_USER_IN_USE"
    assert resp.transport_response.status == 400


async def test_logout_all_devices(new_client, username):
    first = await register(new_client, username, "one")
    second = await login(new_client, username, "two")
    third = await login(new_client, username, "three")
    old = [(c.device_id, c.access_token) for c in (first, second, third)]

    resp = await second.logout(all_devices=True)
    assert isinstance(resp, LogoutResponse), resp
    for device_id, token in old:
        await assert_token_refused(new_client, mxid(username), device_id, token)

    # The account itself survives: logging in again gives a fresh, sole device.
    again = await login(new_client, username, "four")
    assert again.device_id not in {d for d, _ in old}
    assert await device_names(again) == {again.device_id: "four"}


async def test_unused_device_is_listed(new_client, username):
    """A device nobody has used since login still parses in nio's GET /devices."""
    await register(new_client, username, "idle")
    active = await login(new_client, username, "active")
    names = await device_names(active)
    assert sorted(names.values()) == ["active", "idle"]
