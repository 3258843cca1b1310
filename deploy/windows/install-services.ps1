# Install the ChatBox broker and one supervisor per agent as Windows services with NSSM.
# UNTESTED: written from NSSM's documentation and never run by the test suite (it runs on Linux
# only). The Windows counterpart of `chatbox service install`; see docs/SERVICES.md.
# Usage: .\install-services.ps1 -Workspace C:\chatbox -Venv C:\chatbox\.venv -Agents kimi,claude
param(
    [Parameter(Mandatory = $true)][string]$Workspace,
    [Parameter(Mandatory = $true)][string]$Venv,
    [string[]]$Agents = @()
)
$ErrorActionPreference = "Stop"
$nssm = (Get-Command nssm.exe).Source

& $nssm install chatbox-broker "$Venv\Scripts\broker.exe"
& $nssm set chatbox-broker AppEnvironmentExtra "CHATBOX_WORKSPACE=$Workspace"
& $nssm set chatbox-broker AppDirectory $Workspace
& $nssm set chatbox-broker AppStopMethodConsole 30000

foreach ($agent in $Agents) {
    $name = "chatbox-supervisor-$agent"
    & $nssm install $name "$Venv\Scripts\supervisor.exe" "--agent" $agent
    & $nssm set $name AppEnvironmentExtra "CHATBOX_WORKSPACE=$Workspace"
    & $nssm set $name AppDirectory $Workspace
    & $nssm set $name DependOnService chatbox-broker
    & $nssm set $name AppStopMethodConsole 660000
}
