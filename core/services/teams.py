"""Sales teams: who a head of sales with the "team" scope sees.

Membership is set on the user's form (`core.services.user_admin`); here teams are
created, renamed and deleted, each change audited. A team with active members is
not deleted: its head would silently lose sight of their people's records.
"""

from __future__ import annotations

from typing import Any

from core.i18n import _
from core.services import audit
from core.services.common import NotFound, write
from core.tables import Team, User
from core.validation import Form, ValidationError, text


async def list_teams() -> list[dict[str, Any]]:
    """Teams by name, each with its members (active first, then by name)."""
    teams = await Team.select(Team.id, Team.name).order_by(Team.name)
    members = (
        await User.select(User.id, User.username, User.full_name, User.active, User.team)
        .where(User.team.is_not_null())
        .order_by(User.active, ascending=False)
        .order_by(User.full_name)
    )
    for team in teams:
        team["members"] = [m for m in members if m["team"] == team["id"]]
    return teams


async def team_names() -> dict[int, str]:
    return {row["id"]: row["name"] for row in await Team.select(Team.id, Team.name)}


async def get_team(team_id: int) -> dict[str, Any]:
    row = await Team.select(Team.id, Team.name).where(Team.id == team_id).first()
    if row is None:
        raise NotFound(team_id)
    return row


async def _clean_name(name: str, team_id: int | None = None) -> str:
    form = Form({"name": name})
    cleaned = form.field("name", text(128, required=True))
    if cleaned:
        taken = Team.exists().where(Team.name == cleaned)
        if team_id is not None:
            taken = taken.where(Team.id != team_id)
        if await taken:
            form.error("name", _("A team with this name exists."))
    form.raise_if_invalid()
    return str(cleaned)


async def create_team(name: str) -> int:
    cleaned = await _clean_name(name)
    async with write():
        rows = await Team.insert(Team(name=cleaned)).returning(Team.id)
        team_id = int(rows[0]["id"])
        await audit.record("team.create", "team", team_id, cleaned, {"name": [None, cleaned]})
    return team_id


async def rename_team(team_id: int, name: str) -> None:
    team = await get_team(team_id)
    cleaned = await _clean_name(name, team_id)
    if cleaned == team["name"]:
        return
    async with write():
        await Team.update({Team.name: cleaned}).where(Team.id == team_id)
        await audit.record(
            "team.rename", "team", team_id, cleaned, {"name": [team["name"], cleaned]}
        )


async def delete_team(team_id: int) -> None:
    """Refused while active users are in it; inactive members are simply unassigned."""
    team = await get_team(team_id)
    async with write():
        if await User.exists().where((User.team == team_id) & User.active.eq(True)):
            raise ValidationError(
                {"team": _("Move the active members of this team to another team first.")}
            )
        await User.update({User.team: None}).where(User.team == team_id)
        await Team.delete().where(Team.id == team_id)
        await audit.record("team.delete", "team", team_id, team["name"])
