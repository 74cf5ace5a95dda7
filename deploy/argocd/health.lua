-- Argo CD health check for tuner.vpccni.io/NodeNetworkPolicy (Lua 5.1, as Argo CD runs it).
-- Install: resource.customizations.health.tuner.vpccni.io_NodeNetworkPolicy in argocd-cm
-- (deploy/argocd/argocd-cm.yaml carries this file). Tested by tests/argocd.rs.
--
--   no status yet, or status older than the spec   -> Progressing
--   Conflict=True                                  -> Degraded (another policy decides the env)
--   Ready=False                                    -> Degraded (blocked: reason and what to do)
--   CNIConfigured=False AddonUpdating              -> Progressing (an EKS add-on update runs)
--   CNIConfigured=False, an EKS add-on failure      -> Degraded (AddonUpdateFailed, AddonDrift,
--                                                     AccessDenied, AddonConfigurationInvalid, ...)
--   CNIConfigured=False, aws-node left to its owner -> Degraded (HelmOwnsAwsNode,
--                                                     ArgoCdOwnsAwsNode, FluxOwnsAwsNode, ...:
--                                                     the message has the owner-native fix)
--   LaunchTemplatesSynced=False (not DryRun)       -> Degraded (e.g. AccessDenied)
--   KarpenterSynced=False (not DryRun)             -> Degraded (e.g. KarpenterNotInstalled)
--   NodesRolledOut=False RolloutFailed             -> Degraded (a node-group update or instance
--                                                     refresh failed: AWS's reason)
--   Degraded=True                                  -> Degraded (warnings)
--   NodesRolledOut=False RolloutInProgress/Waiting -> Progressing (nodes are being replaced)
--   Ready=True                                     -> Healthy
local hs = {}

local function condition(conditions, kind)
  for _, c in ipairs(conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function describe(c)
  local text = c.reason or ""
  if c.message ~= nil and c.message ~= "" then
    if text ~= "" then
      text = text .. ": "
    end
    text = text .. c.message
  end
  return text
end

if obj.status == nil or obj.status.conditions == nil or #obj.status.conditions == 0 then
  hs.status = "Progressing"
  hs.message = "Waiting for vpc-cni-tuner to reconcile the policy"
  return hs
end

local generation = obj.metadata and obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for vpc-cni-tuner to observe generation " .. tostring(generation)
  return hs
end

local conditions = obj.status.conditions
local ready = condition(conditions, "Ready")
local conflict = condition(conditions, "Conflict")
local degraded = condition(conditions, "Degraded")
local templates = condition(conditions, "LaunchTemplatesSynced")
local karpenter = condition(conditions, "KarpenterSynced")
local cni = condition(conditions, "CNIConfigured")
local rollout = condition(conditions, "NodesRolledOut")
local addon_failures = {
  AddonUpdateFailed = true, AddonDrift = true, AccessDenied = true,
  AddonConfigurationInvalid = true, AwsError = true, NoAwsRegion = true, EksClusterUnknown = true,
}
local owner_handovers = {
  HelmOwnsAwsNode = true, ArgoCdOwnsAwsNode = true, FluxOwnsAwsNode = true,
  KopsOwnsAwsNode = true, TerraformOwnsAwsNode = true, AnotherManagerOwnsAwsNode = true,
}

if conflict ~= nil and conflict.status == "True" then
  hs.status = "Degraded"
  hs.message = "Conflict: " .. describe(conflict)
  return hs
end
if ready == nil or ready.status == "Unknown" then
  hs.status = "Progressing"
  hs.message = "Waiting for the Ready condition"
  return hs
end
if ready.status == "False" then
  hs.status = "Degraded"
  hs.message = describe(ready)
  return hs
end
if cni ~= nil and cni.status == "False" and cni.reason == "AddonUpdating" then
  hs.status = "Progressing"
  hs.message = describe(cni)
  return hs
end
if cni ~= nil and cni.status == "False" and addon_failures[cni.reason] then
  hs.status = "Degraded"
  hs.message = "EKS add-on: " .. describe(cni)
  return hs
end
if cni ~= nil and cni.status == "False" and owner_handovers[cni.reason] then
  hs.status = "Degraded"
  hs.message = "aws-node left to its owner: " .. describe(cni)
  return hs
end
if templates ~= nil and templates.status == "False" and templates.reason ~= "DryRun" then
  hs.status = "Degraded"
  hs.message = "Launch templates: " .. describe(templates)
  return hs
end
if karpenter ~= nil and karpenter.status == "False" and karpenter.reason ~= "DryRun" then
  hs.status = "Degraded"
  hs.message = "Karpenter node classes: " .. describe(karpenter)
  return hs
end
if rollout ~= nil and rollout.status == "False" and rollout.reason == "RolloutFailed" then
  hs.status = "Degraded"
  hs.message = "Rollout: " .. describe(rollout)
  return hs
end
if degraded ~= nil and degraded.status == "True" then
  hs.status = "Degraded"
  hs.message = describe(degraded)
  return hs
end
if rollout ~= nil and rollout.status == "False"
    and (rollout.reason == "RolloutInProgress" or rollout.reason == "RolloutWaiting") then
  hs.status = "Progressing"
  hs.message = "Rollout: " .. describe(rollout)
  return hs
end

hs.status = "Healthy"
hs.message = describe(ready)
if templates ~= nil and templates.message ~= nil and templates.message ~= "" then
  hs.message = hs.message .. "; " .. templates.message
end
return hs
